"""Training numerics guard: stop when the weights (or the validation loss) stop being finite, and
never save a checkpoint that holds NaN or Inf.

A learning rate far too high (``optim.lr=1e6``) can blow the weights up without a single NaN
training loss; with ``train.nonfinite_loss=skip`` the skipped steps hide it further. The guard
checks every parameter and floating buffer with one fused max-abs reduction (one device sync):
every ``every_n_steps`` optimizer steps, at each epoch end, after each validation, and always
right before a checkpoint is written — so the previous ``last.ckpt`` stays when the weights broke.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from mmix_applied.engine.module import NonFiniteLossError

__all__ = ["FiniteWeightsGuard", "NonFiniteWeightsError", "first_nonfinite", "largest_weight"]


class NonFiniteWeightsError(NonFiniteLossError):
    """The model's weights (or its validation loss) became NaN or Inf."""


def _tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    named = [*module.named_parameters(), *module.named_buffers()]
    return [(n, t.detach()) for n, t in named if t.is_floating_point() and t.numel()]


def first_nonfinite(module: torch.nn.Module) -> tuple[str, int, int] | None:
    """The first parameter or buffer holding NaN/Inf: ``(name, bad values, size)``; ``None`` when all are finite.

    The common case (all finite) costs one fused reduction and one sync.
    """
    tensors = _tensors(module)
    if not tensors:
        return None
    peaks = torch._foreach_norm([t for _, t in tensors], math.inf)
    if bool(torch.isfinite(torch.stack([p.float() for p in peaks])).all()):
        return None
    for (name, tensor), peak in zip(tensors, peaks):
        if not bool(torch.isfinite(peak)):
            return name, int((~torch.isfinite(tensor)).sum()), tensor.numel()
    return None  # pragma: no cover - a NaN peak is non-finite, so the loop returns


def largest_weight(module: torch.nn.Module) -> tuple[str, float]:
    """The parameter or buffer with the largest absolute value, and that value."""
    tensors = _tensors(module)
    if not tensors:
        return "", 0.0
    peaks = torch.stack([p.float() for p in torch._foreach_norm([t for _, t in tensors], math.inf)])
    at = int(peaks.argmax())
    return tensors[at][0], float(peaks[at])


class FiniteWeightsGuard(pl.Callback):
    """Raise :class:`NonFiniteWeightsError` when weights turn NaN/Inf; block the checkpoint save.

    Args:
        every_n_steps: Check after every this many optimizer steps (besides epoch ends,
            validations and saves).
    """

    def __init__(self, *, every_n_steps: int = 25) -> None:
        self.every_n_steps = every_n_steps

    def _fix(self, pl_module: pl.LightningModule) -> str:
        config = getattr(pl_module, "config", None)
        lr = getattr(getattr(config, "optim", None), "lr", None)
        lower = f" (optim.lr={lr:g} -> {lr / 100:g})" if isinstance(lr, float) else ""
        precision = str(getattr(getattr(config, "train", None), "precision", "32"))
        full = "" if precision in ("32", "32-true", "64", "64-true") else (
            f", or full precision (train.precision=32; now {precision!r})")
        return (f"Try a lower learning rate{lower}, gradient clipping (train.gradient_clip_val=1.0){full}; the "
                "previous checkpoint was kept (none is saved with NaN/Inf weights)")

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule, where: str) -> None:
        """Raise if a weight of ``pl_module`` is NaN/Inf (``where`` says when the check ran)."""
        bad = first_nonfinite(pl_module)
        if bad is None:
            return
        name, count, size = bad
        raise NonFiniteWeightsError(
            f"the weights are no longer finite {where} (global step {trainer.global_step}, epoch "
            f"{trainer.current_epoch}): first bad parameter {name!r} holds {count} NaN/Inf of {size} values. "
            + self._fix(pl_module)
        )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.check(trainer, pl_module, "after an optimizer step")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module, "at the end of an epoch")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.check(trainer, pl_module, "after validation")
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all()):
            name, peak = largest_weight(pl_module)
            raise NonFiniteWeightsError(
                f"the validation loss is {float(loss)} at epoch {trainer.current_epoch} (global step "
                f"{trainer.global_step}): training diverged (the largest weight is {peak:.3g}, in {name!r}) or the "
                "validation data holds NaN/Inf. "
                + self._fix(pl_module)
            )

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.check(trainer, pl_module, "when saving a checkpoint")
