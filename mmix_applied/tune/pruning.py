"""Prune hopeless trials from their validation figures, epoch by epoch (a Lightning callback).

Optuna's pruners decide from intermediate values a trial reports (``trial.report(value, step)``,
then ``trial.should_prune()``); ``optuna-integration``'s ``PyTorchLightningPruningCallback`` does
that from ``trainer.callback_metrics``. :class:`ValidationPruning` does the same with two changes:

* the figure is the one the trial is judged on. For classification that is the validation NLL at
  the temperature fitted on that split (mixed models are underconfident, so their raw NLL would
  prune exactly the settings temperature scaling rescues): the callback collects the validation
  logits of the epoch (a forward hook on the model, the recipe's own ``split_batch`` and
  ``calibration_scaler``) and fits the temperature as ``fit`` does after training. Other figures
  (``val/mean_dice``, ``val/cer``) are read from ``trainer.callback_metrics``.
* a trial spans several seeds run one after the other, so seed ``i`` reports at steps
  ``i * max_epochs + epoch``: every trial's step ``s`` is the same seed and epoch.
* only the epochs from ``from_epoch`` on report (``tune``: the last quarter of each seed's run).
  Mid-schedule figures rank settings poorly: in the 50-labels-per-class study regime (40 epochs,
  cosine schedule) the validation NLL at T at epoch 24 ranged 0.12-0.32 and the trial that ended
  best stood at 0.215 there, worse than three trials a percentile pruner cut at that epoch.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl

from mmix_applied.metrics.temperature import CalibrationWarning
from mmix_applied.tune.backend import optuna

__all__ = ["SCALED_NLL", "ValidationPruning"]

SCALED_NLL = "val/nll_scaled"


class ValidationPruning(pl.Callback):
    """Report ``figure`` after each validation epoch to ``trial``; raise ``optuna.TrialPruned`` when told.

    Args:
        trial: The running ``optuna.Trial``.
        figure: ``val/nll_scaled`` (computed here) or a logged validation metric.
        step_offset: Added to the epoch (``seed index * max_epochs``).
        from_epoch: The first epoch that reports (earlier validation epochs are ignored).
    """

    def __init__(self, trial: Any, *, figure: str, step_offset: int = 0, from_epoch: int = 0) -> None:
        self.trial, self.figure, self.step_offset, self.from_epoch = trial, figure, step_offset, from_epoch
        self._scaler: Any = None
        self._hook: Any = None
        self._out: Any = None
        self.reported: list[tuple[int, float]] = []

    def _collect(self, module: Any, args: Any, output: Any) -> None:
        self._out = output

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Start collecting the epoch's validation logits (the scaled-NLL figure only)."""
        if self.figure == SCALED_NLL and not trainer.sanity_checking and trainer.current_epoch >= self.from_epoch:
            self._scaler = pl_module.recipe.calibration_scaler()
            if self._scaler is None:
                raise ValueError(f"tune: recipe {pl_module.recipe.name!r} fits no temperature, so it has no "
                                 f"{SCALED_NLL}; judge it on a logged validation metric instead")
            self._hook = pl_module.model.register_forward_hook(self._collect)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        """Add the batch's logits and targets to the epoch's temperature fit."""
        if self._scaler is not None and self._out is not None:
            _, target = pl_module.recipe.split_batch(batch)
            pl_module.recipe.update_metrics(self._scaler, self._out.detach(), target)
            self._out = None

    def _value(self, trainer: pl.Trainer) -> float | None:
        if self.figure == SCALED_NLL:
            if self._scaler is None or not self._scaler.num_positions:
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CalibrationWarning)
                return float(self._scaler.nll(self._scaler.fit()))
        value = trainer.callback_metrics.get(self.figure)
        return None if value is None else float(value)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Report the figure; prune when the pruner says so."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if trainer.sanity_checking or trainer.current_epoch < self.from_epoch:
            return
        value = self._value(trainer)
        self._scaler = None
        if value is None:
            return
        step = self.step_offset + trainer.current_epoch
        self.trial.report(value, step)
        self.reported.append((step, value))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch} (step {step}): {self.figure} "
                                     f"{value:.4g}")

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        """Remove the hook when the fit ends in an exception (pruning included)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
