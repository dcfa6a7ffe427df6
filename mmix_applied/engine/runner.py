"""Run a config: one run directory, a Lightning ``Trainer``, and ``fit`` / ``test`` / ``predict``.

Layout of a run directory ``run.dir/run.name``::

    config.yaml            resolved config
    checkpoints/last.ckpt  every epoch end (atomic); epochNNN.ckpt: the best ``save_top_k`` by ``train.monitor``
    metrics.csv            CSV logger (tb/ holds TensorBoard events)
    temperature.json       after ``fit``: the temperature of each checkpoint (engine.calibrate)
    fit_summary.json       after ``fit``: best and last validation metrics, checkpoints (engine.summary)
    test_metrics.json      after ``test``
    predictions.csv        after ``predict`` (recipe-defined)
    .lock                  held by the ``fit`` writing into it (its PID); a second one fails at once
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from mmix_applied.deploy.info import INFERENCE_KEY
from mmix_applied.deploy.runs import RunCheckpoint, resolve_run_checkpoint
from mmix_applied.engine.callbacks import BackboneFreeze, EpochToDataset, RankSummary
from mmix_applied.engine.checkpoints import (
    AtomicCheckpointIO,
    check_resume_config,
    check_resume_limits,
    check_state_shapes,
    load_checkpoint,
    read_run_checkpoint,
)
from mmix_applied.engine.config import Config, parse_config, read_yaml, save_config
from mmix_applied.engine.csvlog import HistoryCSVLogger
from mmix_applied.engine.data_summary import announce_data
from mmix_applied.engine.guards import FiniteWeightsGuard
from mmix_applied.engine.module import MixupModule
from mmix_applied.engine.performance import LoaderPace, RestartStaleLoader
from mmix_applied.engine.posthoc import calibrate_run, temperature_note
from mmix_applied.engine.recipe import get_recipe
from mmix_applied.engine.run_logs import EpochLines, LogResolvedConfig, build_loggers, plain_progress
from mmix_applied.engine.rundir import RunLock, RunWriteError, check_run_name, prediction_output, write_error
from mmix_applied.engine.summary import ClassReport, ValidationHistory, write_fit_summary
from mmix_applied.lightning import MixerCheckpoint
from mmix_applied.utils.atomic import atomic_write_text
from mmix_applied.utils.interrupts import Stopped

__all__ = ["build_trainer", "config_of_checkpoint", "fit", "locate_checkpoint", "predict", "resolve_checkpoint",
           "run_dir_of", "stored_config", "test"]

_RUN_NAME_ENV = "MMIX_APPLIED_RUN_NAME"  # shares a generated run name with DDP child processes


def run_dir_of(config: Config) -> Path:
    """The run directory of ``config`` (``run.dir/run.name``; a timestamped name when unset)."""
    name = config.run.name or os.environ.get(_RUN_NAME_ENV)
    if not name:
        name = f"{config.recipe}-{config.mix.variant}-{time.strftime('%Y%m%d-%H%M%S')}"
        config.run.name = name
    check_run_name(name)
    return Path(config.run.dir) / name


def locate_checkpoint(spec: str | os.PathLike, config: Config | None = None, *,
                      default: Literal["best", "last"] = "best") -> RunCheckpoint:
    """The checkpoint ``spec`` names and why: ``RUN``, ``RUN:best``, ``RUN:last``, a ``.ckpt`` file or ``last``.

    ``last`` means ``checkpoints/last.ckpt`` of ``run.dir/run.name`` when ``run.name`` is set,
    otherwise of the most recently written run under ``run.dir``. A bare run directory means
    ``default`` (:func:`mmix_applied.deploy.runs.resolve_run_checkpoint`: ``best`` falls back to
    ``last.ckpt`` when no best checkpoint is recorded). ``describe()`` of the result is the line
    the CLI prints.

    Raises:
        FileNotFoundError: Nothing to use (the message says where it looked).
    """
    if str(spec) == "last":
        if config is None:
            raise ValueError("resume='last' needs a config (its run.dir and run.name say where to look)")
        if config.run.name:
            candidates = [Path(config.run.dir) / config.run.name / "checkpoints" / "last.ckpt"]
        else:
            candidates = sorted(Path(config.run.dir).glob("*/checkpoints/last.ckpt"),
                                key=lambda p: p.stat().st_mtime, reverse=True)
        found = [p for p in candidates if p.is_file()]
        if not found:
            where = candidates[0] if candidates else Path(config.run.dir) / "*" / "checkpoints" / "last.ckpt"
            raise FileNotFoundError(f"--resume last: no checkpoint at {str(where)!r}; start a new run without "
                                    "--resume, or pass --resume PATH")
        return RunCheckpoint(found[0], _run_dir_of_checkpoint(found[0]), "last",
                             "last epoch" + ("" if config.run.name else " of the most recent run under run.dir"))
    return resolve_run_checkpoint(spec, default=default)


def resolve_checkpoint(resume: str | os.PathLike, config: Config | None = None, *,
                       default: Literal["best", "last"] = "last") -> Path:
    """The checkpoint file ``resume`` names (see :func:`locate_checkpoint`); a run directory means its
    ``last.ckpt`` unless ``default="best"``.

    Raises:
        FileNotFoundError: Nothing to resume from (the message says where it looked).
    """
    return locate_checkpoint(resume, config, default=default).path


def _run_dir_of_checkpoint(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def config_of_checkpoint(ckpt: str | os.PathLike) -> Config:
    """The config a run was trained with: ``config.yaml`` of the checkpoint's run directory, else the
    config stored in the checkpoint itself (a checkpoint copied without its run directory)."""
    path = _run_dir_of_checkpoint(Path(ckpt)) / "config.yaml"
    if not path.is_file():
        stored = stored_config(ckpt)
        if stored is not None:
            return parse_config(stored)
    return parse_config(read_yaml(path))


def stored_config(ckpt: str | os.PathLike) -> dict[str, Any] | None:
    """The resolved config saved inside a checkpoint of ``mmix-applied fit`` (``None`` when it has none)."""
    saved = (load_checkpoint(ckpt).get("mmix") or {}).get("config")
    return dict(saved) if isinstance(saved, dict) and saved else None


def build_trainer(config: Config, run_dir: Path, recipe: Any, *, stage: str = "fit",
                  callbacks: Sequence[Any] = ()) -> pl.Trainer:
    """A Lightning ``Trainer`` for ``config`` writing into ``run_dir`` (``callbacks``: the caller's extra ones)."""
    t = config.train
    callbacks = [EpochToDataset(), *recipe.callbacks(), *callbacks]
    loggers: list[Any] = []
    if stage == "fit":
        validate = t.limit_val_batches != 0
        monitor = t.monitor if validate else None
        # last.ckpt after every epoch (what --resume continues from), and the best save_top_k by monitor
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None,
                                         save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False))
        if monitor and t.save_top_k != 0:
            callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="epoch{epoch:03d}",
                                             monitor=monitor, mode=t.monitor_mode, save_top_k=t.save_top_k,
                                             auto_insert_metric_name=False, enable_version_counter=False))
        callbacks.append(MixerCheckpoint())  # the mixer's plans continue on resume, every rank its own
        callbacks.append(RankSummary(run_dir))
        callbacks.append(ValidationHistory())
        callbacks.append(FiniteWeightsGuard())
        callbacks.append(RestartStaleLoader())
        if t.loader_check_steps > 0:
            callbacks.append(LoaderPace(steps=t.loader_check_steps,
                                        num_workers=getattr(config.data, "num_workers", 0)))
        if config.model.freeze_backbone_epochs:
            callbacks.append(BackboneFreeze(config.model.freeze_backbone_epochs))
        loggers = build_loggers(config, run_dir)
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
            callbacks.append(LogResolvedConfig(config))
    if plain_progress(config):  # a log file, not a terminal: one line per epoch, no redrawn bar
        callbacks.append(EpochLines())
    one_device = stage in ("test", "predict")  # a DistributedSampler would pad (repeat) test samples
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=1 if one_device else t.devices,
        num_nodes=1 if one_device else t.num_nodes,
        strategy="auto" if one_device else t.strategy,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm=t.gradient_clip_algorithm,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches,
        limit_predict_batches=t.limit_predict_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=stage == "fit" and t.enable_progress_bar,
        num_sanity_val_steps=0,
        logger=loggers if loggers else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        # a compiled model evaluates under no_grad, as fit's validation does, so the temperature fit and
        # test reuse that graph (inference tensors would compile one more)
        inference_mode=not t.compile,
    )
    _no_collective_in_the_sigterm_handler(trainer)
    return trainer


def _no_collective_in_the_sigterm_handler(trainer: pl.Trainer) -> None:
    """Lightning's SIGTERM handler broadcasts to the other ranks from inside the signal handler.

    A handler runs wherever the main thread is; when that is inside another collective (the
    checkpoint's all-gather of every rank's RNG and mixer state), the two collectives interleave and
    every rank waits forever (a DDP ``fit`` hung on SIGTERM that way). The replacement does the
    rest of Lightning's handler: it passes the signal on to the processes the launcher started and
    sets the flag, which Lightning itself all-reduces at the next step boundary (its
    ``training_epoch_loop``), where every rank is at the same point.
    """
    connector = getattr(trainer, "_signal_connector", None)
    if connector is None or not hasattr(connector, "_sigterm_notifier_fn"):
        return  # another Lightning: its own handling applies

    def notify(signum: int, _frame: Any) -> None:
        if not connector.received_sigterm:
            launcher = trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)
        connector.received_sigterm = True

    connector._sigterm_notifier_fn = notify


def _quiet_lightning() -> None:
    for message in (".*does not have many workers.*", ".*LeafSpec.*",
                    ".*Checkpoint directory.*exists and is not empty.*", ".*Experiment logs directory.*",
                    ".*number of training batches.*smaller than the logging interval.*",
                    ".*callbacks used to create the checkpoint need to be provided.*", ".*dirpath has changed from.*",
                    ".*`training_step` returned `None`.*"):
        warnings.filterwarnings("ignore", message=message)


def _setup(config: Config, seed: bool = True, state: dict[str, Any] | None = None) -> tuple[Any, MixupModule]:
    _quiet_lightning()
    if seed:
        pl.seed_everything(config.seed, workers=True, verbose=False)
    recipe = get_recipe(config.recipe)(config)
    inference = ((state or {}).get("mmix") or {}).get(INFERENCE_KEY)
    if inference:  # class names, charset... from the checkpoint: the training data may be gone
        recipe.from_inference_metadata(inference)
    return recipe, MixupModule(config, recipe)


def fit(config: Config, *, resume: str | os.PathLike | None = None, callbacks: Sequence[Any] = ()) -> Path:
    """Train ``config``; with ``resume`` (a checkpoint, a run directory or ``last``) continue exactly.

    ``callbacks`` are extra Lightning callbacks of the caller (``tune`` prunes through one).

    Nothing is written before the checks pass: the run directory's lock (one ``fit`` per directory),
    and on resume the checkpoint's recipe, model, tensor shapes and the keys that cannot change.

    Returns:
        The run directory.

    Raises:
        FileExistsError: If the run directory already holds checkpoints and ``resume`` is not given,
            or another live run holds its lock (:class:`~mmix_applied.engine.rundir.RunLockedError`).
        CheckpointError: ``resume`` names a checkpoint of another recipe or model, one whose shapes
            differ, the config changes keys that cannot change on resume, or ``train.max_epochs`` /
            ``train.max_steps`` are below what the checkpoint has trained.
        ConfigError: ``run.name`` is absolute or holds ``..`` (it would write outside ``run.dir``).
        RunWriteError: A file of the run cannot be written (read-only folder, full disk).
        Stopped: Ctrl-C or SIGTERM under the command line's handlers (:mod:`mmix_applied.utils.interrupts`).
    """
    if config.run.name:
        check_run_name(config.run.name)  # before `--resume last` looks under it
    get_recipe(config.recipe).absolute_paths(config)  # the run's config works from any folder
    ckpt = resolve_checkpoint(resume, config) if resume is not None else None
    state = None
    if ckpt is not None:
        run_dir = _run_dir_of_checkpoint(ckpt)
        config.run.dir, config.run.name = str(run_dir.parent), run_dir.name
        state = read_run_checkpoint(ckpt, config)
        check_resume_config(state, config, ckpt)
        resumed_step = check_resume_limits(state, config, ckpt)
    else:
        run_dir = run_dir_of(config)
    launcher = os.environ.get(_RUN_NAME_ENV) is None  # DDP children share the launching process's lock
    if ckpt is None and launcher:
        _refuse_existing(run_dir)
    recipe, module = _setup(config)
    if state is not None:
        check_state_shapes(state, module, ckpt)
        state = None
    datamodule = recipe.build_datamodule()
    trainer = build_trainer(config, run_dir, recipe, stage="fit", callbacks=callbacks)
    if ckpt is not None:  # logs/metrics.csv keeps the rows logged up to the checkpoint
        for logger in trainer.loggers:
            if isinstance(logger, HistoryCSVLogger):
                logger.resume_at(resumed_step)
    save_split_record = announce_data(config, recipe, module.model, datamodule, run_dir, resume=ckpt is not None,
                                      rank_zero=trainer.is_global_zero)  # summary printed; changed data refused
    # the lock is taken where the run directory is first written (a bad config or data folder writes nothing)
    lock = RunLock(run_dir) if launcher else None
    try:
        if ckpt is None and launcher:
            _refuse_existing(run_dir)  # again: a run that held the lock may have finished meanwhile
        if trainer.is_global_zero:
            _write(lambda: save_config(config, run_dir / "config.yaml"), run_dir / "config.yaml")
            _write(save_split_record, run_dir / "data_splits.json")
            for stale in (run_dir / "checkpoints").glob(".*.tmp"):  # left by a kill during a save
                stale.unlink(missing_ok=True)
        previous = os.environ.get(_RUN_NAME_ENV)
        os.environ[_RUN_NAME_ENV] = run_dir.name
        try:
            _write(lambda: trainer.fit(module, datamodule=datamodule,
                                       ckpt_path=str(ckpt) if ckpt is not None else None), run_dir, exact=False)
        except Stopped as stop:  # Ctrl-C or SIGTERM (the CLI's handlers): DDP processes started here stop too
            _stop_children(trainer, stop.signum)
            raise
        finally:
            if previous is None:
                os.environ.pop(_RUN_NAME_ENV, None)
        history = next(cb for cb in trainer.callbacks if isinstance(cb, ValidationHistory))
        if (ckpt is not None and not history.history and config.train.limit_val_batches != 0
                and trainer.world_size == 1):
            # resumed from a checkpoint written after the last training epoch but before its validation
            # ended (a kill there, then `--resume`): nothing was left to train, so validate the final
            # weights once, for the summary's last validation figures
            trainer.validate(module, datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:  # one temperature per checkpoint, over the whole validation split (lock held)
            calibration = _write(lambda: calibrate_run(config, run_dir, recipe, module, datamodule,
                                                       build_trainer=build_trainer), run_dir, exact=False)
            _write(lambda: write_fit_summary(run_dir, trainer, history, monitor=config.train.monitor,
                                             calibration=calibration), run_dir / "fit_summary.json")
        if module.mixer is not None:
            module.mixer.close()
    finally:
        if lock is not None:
            lock.release()
    return run_dir


def _stop_children(trainer: pl.Trainer, signum: int) -> None:
    """Pass a stop on to the DDP processes this one launched (Lightning does so only for its own handlers)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    procs = getattr(launcher, "procs", None) or []
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signum)
            except OSError:
                pass


def _refuse_existing(run_dir: Path) -> None:
    existing = run_dir / "checkpoints"
    if existing.is_dir() and any(existing.glob("*.ckpt")):
        raise FileExistsError(f"run directory {str(run_dir)!r} already has checkpoints; continue it with "
                              "--resume last (or resume=...), or choose another run.name")


def _write(action: Callable[[], Any], path: Path, *, exact: bool = True) -> Any:
    """Run ``action``; an ``OSError`` from a write becomes a :class:`RunWriteError` naming the file and the cause.

    ``exact``: ``path`` is the file being written; otherwise the error's own file name (or ``path``) is named.
    """
    try:
        return action()
    except RunWriteError:
        raise
    except OSError as err:
        raise write_error(err, path if exact else getattr(err, "filename", None) or path) from err


def test(config: Config, *, checkpoint: str | os.PathLike,
         on_metrics: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the test split (unmixed); writes ``test_metrics.json`` in its run dir.

    With the checkpoint's temperature (fitted after ``fit``) the calibration figures are also
    reported for ``logits / T`` as ``test/<name>_scaled``, and ``temperature`` is in the result
    (with ``temperature_note`` when the fit was degenerate and T = 1 was kept); ``hd95_unit`` says
    whether HD95 is in mm or pixels/voxels;
    with ``options.ood`` set, ``test/ood_auroc`` and ``test/ood_fpr95`` (raw max-softmax scores)
    and their ``_scaled`` forms (scores of ``logits / T``).

    Args:
        config: The resolved config.
        checkpoint: A ``.ckpt`` file, a run directory (its best checkpoint when one is recorded, else
            ``last.ckpt``), ``RUN:best``, ``RUN:last`` or ``last``.
        on_metrics: Called with the metrics before ``test_metrics.json`` is written (the CLI prints
            them there, so a failed write loses nothing).

    Raises:
        CheckpointError: The checkpoint is not one of this recipe and model, or its shapes differ.
        RunWriteError: ``test_metrics.json`` cannot be written (its ``metrics`` attribute holds them).
    """
    ckpt = resolve_checkpoint(checkpoint, config, default="best")
    run_dir = _run_dir_of_checkpoint(ckpt)
    state = read_run_checkpoint(ckpt, config)
    recipe, module = _setup(config, state=state)
    check_state_shapes(state, module, ckpt)
    note = temperature_note(state)
    del state
    module.ood_inputs = recipe.ood_inputs()
    trainer = build_trainer(config, run_dir, recipe, stage="test")
    results = trainer.test(module, datamodule=recipe.build_datamodule(), ckpt_path=str(ckpt), verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    metrics.update({f"test/{k}": float(v) for k, v in module.ood_results.items()})
    if module.temperature is not None:
        metrics["temperature"] = float(module.temperature)
        if note is not None:  # the fit was degenerate: T = 1 kept, the reason said (engine.posthoc)
            metrics["temperature_note"] = note
    unit = getattr(module.test_metrics, "hd95_unit", None)
    if unit is not None and any(k.startswith("test/hd95_") or k == "test/mean_hd95" for k in metrics):
        metrics["hd95_unit"] = unit
    if on_metrics is not None:
        on_metrics(metrics)
    if trainer.is_global_zero:
        target = run_dir / "test_metrics.json"
        try:
            atomic_write_text(target, json.dumps(metrics, indent=2, sort_keys=True))
            for report in (cb for cb in trainer.callbacks if isinstance(cb, ClassReport)):
                target = run_dir / "confusion_matrix.json"
                report.write(run_dir)  # per-class figures and the confusion matrix (classification)
        except OSError as err:
            raise write_error(err, target, metrics=metrics) from err
    if module.mixer is not None:
        module.mixer.close()
    return metrics


def predict(config: Config, *, checkpoint: str | os.PathLike, input: str | None = None,
            output: str | os.PathLike | None = None, raw: bool = False, overwrite: bool = False) -> Path:
    """Predict with ``checkpoint`` on ``input`` (recipe-defined; default the test split); returns the file written.

    Probabilities are calibrated with the checkpoint's temperature (when it has one) unless
    ``raw``; the classification CSV's ``temperature`` column says which T was applied (1: raw).
    Args:
        config: The resolved config.
        checkpoint: A ``.ckpt`` file, a run directory (its best checkpoint when one is recorded, else
            ``last.ckpt``), ``RUN:best``, ``RUN:last`` or ``last``.
        input: What to predict on (recipe-defined).
        output: The file, or a folder (existing, or a new name without a suffix) for ``folder/predictions.csv``;
            default ``RUN_DIR/predictions.csv``.
        overwrite: Replace an existing ``output`` that is not a previous prediction (never a checkpoint or an input).

    Raises:
        FileExistsError: ``output`` is a checkpoint or an input, an existing file of something else without
            ``overwrite``, or (segmentation) its masks folder holds files no earlier prediction wrote.
        RunWriteError: The predictions cannot be written.
    """
    ckpt = resolve_checkpoint(checkpoint, config, default="best")
    run_dir = _run_dir_of_checkpoint(ckpt)
    path = prediction_output(output, run_dir=run_dir, overwrite=overwrite or output is None, inputs=input)
    state = read_run_checkpoint(ckpt, config)
    recipe, module = _setup(config, state=state)
    recipe.check_prediction_output(path)  # files the recipe writes beside the table (segmentation masks)
    module.predict_raw = raw
    check_state_shapes(state, module, ckpt)
    del state
    trainer = build_trainer(config, run_dir, recipe, stage="predict")
    datamodule = recipe.build_datamodule(predict_input=input)
    outputs = trainer.predict(module, datamodule=datamodule, ckpt_path=str(ckpt))
    written = Path(_write(lambda: recipe.write_predictions(list(outputs or []), path), path))
    if module.mixer is not None:
        module.mixer.close()
    if written != path:  # every check above was of `path`
        raise RuntimeError(f"recipe {config.recipe!r} wrote its predictions to {str(written)!r}, not to the checked "
                           f"--output {str(path)!r}; its write_predictions must write the path it is given")
    return written
