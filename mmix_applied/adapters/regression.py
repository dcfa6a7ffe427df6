"""Regression adapter: interpolated float targets with any elementwise loss."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..plan import MixPlan
from .base import TaskAdapter, check_batch, check_tensor, mix_batch, mix_dense

__all__ = ["Regression", "LOSSES"]

LOSSES: dict[str, Callable[..., Tensor]] = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "smooth_l1": F.smooth_l1_loss,
    "huber": F.huber_loss,
}


class Regression(TaskAdapter):
    """Regression on float targets of the output's shape, mixed as ``lam*y + (1-lam)*y[perm]``.

    Args:
        loss: a name from :data:`LOSSES` or a callable ``loss(output, target) -> Tensor`` (elementwise
            mean), e.g. ``torch.nn.functional.mse_loss``.
        validate: reject NaN/Inf targets (one device sync per call).
    """

    def __init__(self, loss: str | Callable[[Tensor, Tensor], Tensor] = "mse", *, validate: bool = True) -> None:
        super().__init__()
        self.validate = validate
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"Regression: unknown loss {loss!r}; valid: {sorted(LOSSES)} or a callable.")
            self.loss_fn = LOSSES[loss]
        elif callable(loss):
            self.loss_fn = loss
        else:
            raise TypeError(f"Regression: loss must be a name or a callable; received {type(loss).__name__}.")

    def mix_targets(self, target: Tensor, plan: MixPlan) -> Tensor:
        """``lam * y + (1 - lam) * y[perm]``; in cutmix, a dense ``(B, C, *S)`` target swaps the box."""
        if plan.box is not None and target.dim() >= 3:
            return mix_dense(target.float(), plan)
        return mix_batch(target.float(), plan)

    def loss(self, output: Tensor, target: Tensor, plan: MixPlan | None = None) -> Tensor:
        output = check_tensor(output, "output", "Regression")
        target = check_tensor(target, "target", "Regression")
        check_batch(output, target, "Regression")
        if target.shape != output.shape:
            raise ValueError(
                f"Regression: target shape {tuple(target.shape)} must equal output shape {tuple(output.shape)}; "
                "reshape the target (e.g. target.view(-1, 1) for one output)."
            )
        if not target.is_floating_point():
            raise TypeError(f"Regression: target must be a float tensor; received dtype {target.dtype}.")
        if self.validate and not bool(torch.isfinite(target).all()):
            bad = int((~torch.isfinite(target)).sum())
            raise ValueError(f"Regression: target holds {bad} NaN/Inf values; clean or mask them before the loss.")
        y = target if plan is None else self.mix_targets(target, plan)
        return self.loss_fn(output.float(), y.float().to(output.device))
