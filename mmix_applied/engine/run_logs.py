"""What a run logs: the loggers (CSV, TensorBoard, MLflow), the resolved config as their hyperparameters,
and, outside a terminal, one progress line per epoch instead of a progress bar.

Lightning's loggers write the metrics; they also write ``hparams.yaml`` from the hyperparameters
they are given, which for a module that takes a config object is nothing, so
:class:`LogResolvedConfig` hands them the resolved config (``config_to_dict``) when ``fit`` starts,
after the run directory's lock is held. A progress bar redraws its line with ``\\r``; in a log file
(a batch job, ``nohup``, CI) every redraw becomes a line, so when standard output is not a terminal
:class:`EpochLines` prints one line per epoch instead (Lightning's ``ProgressBar`` contract).
MLflow is optional: ``train.loggers: [mlflow]`` needs the ``mlflow`` package, and the error says so.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

from mmix_applied.engine.config import Config, ConfigError, config_to_dict
from mmix_applied.engine.csvlog import HistoryCSVLogger

__all__ = ["EpochLines", "LogResolvedConfig", "build_loggers", "plain_progress", "stdout_is_terminal"]


def stdout_is_terminal() -> bool:
    """Whether standard output is an interactive terminal (a progress bar can redraw its line there)."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def plain_progress(config: Config) -> bool:
    """Whether to print one line per epoch instead of a progress bar: the bar is on and stdout is no terminal."""
    return bool(config.train.enable_progress_bar) and not stdout_is_terminal()


def _mlflow_logger(config: Config, run_dir: Path) -> Any:
    try:
        importlib.import_module("mlflow")
    except ImportError:
        raise ConfigError("config key 'train.loggers': received 'mlflow', but the mlflow package is not installed. "
                          "Install it (pip install mlflow), or use csv and tensorboard "
                          "(train.loggers=[csv,tensorboard])") from None
    # MLFLOW_TRACKING_URI (a tracking server) wins; otherwise a file store inside the run directory
    return MLFlowLogger(experiment_name=config.recipe, run_name=run_dir.name, save_dir=str(run_dir / "mlruns"),
                        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None)


def build_loggers(config: Config, run_dir: Path) -> list[Any]:
    """The loggers ``train.loggers`` names, writing into ``run_dir`` (``logs/``, ``tb/``, ``mlruns/``).

    Raises:
        ConfigError: ``mlflow`` is named but the package is not installed.
    """
    loggers: list[Any] = []
    names = config.train.loggers
    if "csv" in names:
        loggers.append(HistoryCSVLogger(save_dir=str(run_dir), name="", version="logs"))  # kept across --resume
    if "tensorboard" in names:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="", version="tb", default_hp_metric=False))
    if "mlflow" in names:
        loggers.append(_mlflow_logger(config, run_dir))
    return loggers


class LogResolvedConfig(pl.Callback):
    """Give every logger the resolved config as its hyperparameters when ``fit`` starts.

    Runs before Lightning logs the module's own (empty) hyperparameters and writes
    ``hparams.yaml``, so the file holds the config (nested, as ``config.yaml``).
    """

    def __init__(self, config: Config) -> None:
        self.hparams = config_to_dict(config)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the config to each logger (rank 0: the loggers are rank-zero only)."""
        for logger in trainer.loggers:
            logger.log_hyperparams(self.hparams)


def _number(value: Any) -> float | None:
    try:
        return float(value) if getattr(value, "numel", lambda: 1)() == 1 else None
    except (TypeError, ValueError):
        return None


class EpochLines(ProgressBar):
    """One line per epoch on standard output: ``epoch 3/10 (12.3 s): train/loss 0.412, val/loss 0.380, ...``.

    The progress bar for logs that are files: nothing is redrawn, so nothing is repeated. The
    line holds the epoch's logged metrics (the epoch means of step metrics, not their last step).
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        """Print nothing (other ranks than 0)."""
        self._enabled = False

    def enable(self) -> None:
        """Print the epoch lines."""
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the epoch's clock."""
        self._start = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Print the epoch's line (validation of the epoch has run by now)."""
        if not self._enabled:
            return
        values = {}
        for key, value in sorted(trainer.callback_metrics.items()):
            number = _number(value)
            if number is not None and not key.endswith("_step"):
                values[key.removesuffix("_epoch")] = number
        total = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
        items = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        self.print(f"epoch {trainer.current_epoch + 1}{total} ({time.monotonic() - self._start:.1f} s)"
                   f"{': ' + items if items else ''}", flush=True)
