"""Regression adapter: interpolated float targets with any elementwise loss.

Adapters note: ``Regression.mix_targets(y, plan)`` is ``lam * y + (1 - lam) * y[perm]`` (a dense
``(B, C, *S)`` target swaps the plan's box in cutmix), so any ``criterion(output, mixed)`` works.
The NaN/Inf check runs in eager calls only (skipped under ``torch.compile``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mmix_applied.core.plan import MixPlan

from .base import Adapter, check_batch, check_tensor, checking_values, mix_batch, mix_dense

__all__ = ["Regression", "LOSSES"]

LOSSES: dict[str, Callable[..., Tensor]] = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "smooth_l1": F.smooth_l1_loss,
    "huber": F.huber_loss,
}


class Regression(Adapter):
    """Regression on float targets of the output's shape, mixed as ``lam*y + (1-lam)*y[perm]``.

    Args:
        loss: a name from :data:`LOSSES` or a callable ``loss(output, target) -> Tensor`` (elementwise
            mean), e.g. ``torch.nn.functional.mse_loss``.
        validate: reject NaN/Inf targets (one device sync per eager call; skipped under
            ``torch.compile``).
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

    def _target(self, target: Tensor) -> Tensor:
        target = check_tensor(target, "target", "Regression")
        if not target.is_floating_point():
            raise TypeError(f"Regression: target must be a float tensor; received dtype {target.dtype}. "
                            "Convert it with target.float().")
        if checking_values(self.validate) and not bool(torch.isfinite(target).all()):
            bad = int((~torch.isfinite(target)).sum())
            raise ValueError(f"Regression: target holds {bad} NaN/Inf values; clean or mask them before the loss.")
        return target.float()

    def mix_targets(self, target: Tensor, plan: MixPlan | None) -> Tensor:
        """``lam * y + (1 - lam) * y[perm]`` as float32; in cutmix, a dense ``(B, C, *S)`` target swaps
        the box. With ``plan=None`` the target itself (as float32)."""
        target = self._target(target)
        if plan is None:
            return target
        if plan.box is not None and target.dim() >= 3:
            return mix_dense(target, plan)
        return mix_batch(target, plan)

    def loss(self, output: Tensor, target: Tensor, plan: MixPlan | None = None) -> Tensor:
        """The configured loss of the output against the mixed target, ``loss_fn(output, mix_targets(y, plan))``.

        Args:
            output: Predictions of any shape ``(B, ...)``.
            target: Float targets of the output's shape.
            plan: The step's :class:`~mmix_applied.core.plan.MixPlan`; ``None`` for an unmixed step.

        Returns:
            The loss (a scalar for the named losses, which average over every element), in float32.

        Raises:
            TypeError: ``output`` or ``target`` is not a tensor, or the target is not floating point.
            ValueError: The shapes (or the plan's batch size) differ, or the target holds NaN/Inf
                (checked in eager calls only).
        """
        output = check_tensor(output, "output", "Regression")
        target = check_tensor(target, "target", "Regression")
        check_batch(output, target, "Regression")
        if target.shape != output.shape:
            raise ValueError(
                f"Regression: target shape {tuple(target.shape)} must equal output shape {tuple(output.shape)}; "
                "reshape the target (e.g. target.view(-1, 1) for one output)."
            )
        y = self.mix_targets(target, plan)
        return self.loss_fn(output.float(), y.to(output.device))
