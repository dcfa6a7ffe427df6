"""CTC adapter: sequence targets cannot be interpolated, so the losses are mixed.

For a mixed state, ``loss = lam * CTC(out, y) + (1 - lam) * CTC(out, y[perm])`` per sample, as
in Manifold Mixup for handwriting recognition (Moysset & Messina, ICDAR 2019). Per-sample lam
is respected. The mixed sequence carries content of both lines, so its length is the longer of
the two: both terms use ``max(len_i, len_perm[i])`` output steps.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from ..plan import MixPlan
from .base import TaskAdapter, check_tensor

__all__ = ["CTC"]


class CTC(TaskAdapter):
    """Connectionist temporal classification with loss mixing.

    Args:
        blank: index of the blank symbol.
        reduction: ``"mean"`` (each sample's loss divided by its target length, then the batch mean,
            as ``F.ctc_loss``) or ``"sum"``.
        zero_infinity: replace infinite losses (target longer than the output allows) by 0 with a
            warning, instead of raising.

    Shapes: output log-probabilities ``(T, B, C)`` or a pair ``(log_probs, output_lengths (B,))``;
    target a pair ``(padded_targets (B, S), target_lengths (B,))`` of integer tensors.
    """

    def __init__(self, *, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"CTC: reduction must be 'mean' or 'sum'; received {reduction!r}.")
        if isinstance(blank, bool) or not isinstance(blank, int) or blank < 0:
            raise ValueError(f"CTC: blank must be an int >= 0; received {blank!r}.")
        self.blank, self.reduction, self.zero_infinity = blank, reduction, zero_infinity

    def _unpack(self, output, target) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if isinstance(output, (tuple, list)):
            if len(output) != 2:
                raise ValueError(f"CTC: output must be log_probs or (log_probs, output_lengths); received {len(output)} items.")
            log_probs, out_lengths = output
        else:
            log_probs, out_lengths = output, None
        log_probs = check_tensor(log_probs, "log_probs", "CTC")
        if log_probs.dim() != 3:
            raise ValueError(f"CTC: log_probs must be (T, B, C); received shape {tuple(log_probs.shape)}.")
        T, B, C = log_probs.shape
        if not 0 <= self.blank < C:
            raise ValueError(f"CTC: blank={self.blank} is outside the {C} output classes.")
        if out_lengths is None:
            out_lengths = torch.full((B,), T, dtype=torch.long, device=log_probs.device)
        if not isinstance(target, (tuple, list)) or len(target) != 2:
            raise TypeError("CTC: target must be a pair (padded_targets (B, S), target_lengths (B,)).")
        targets, tgt_lengths = (check_tensor(t, n, "CTC") for t, n in zip(target, ("padded_targets", "target_lengths")))
        if targets.is_floating_point() or tgt_lengths.is_floating_point():
            raise TypeError(f"CTC: targets and lengths must be integer tensors; received {targets.dtype} and {tgt_lengths.dtype}.")
        if targets.dim() != 2 or targets.shape[0] != B or tgt_lengths.shape != (B,) or out_lengths.shape != (B,):
            raise ValueError(
                f"CTC: batch mismatch: log_probs {tuple(log_probs.shape)} (T, B, C), padded_targets {tuple(targets.shape)} "
                f"(B, S), target_lengths {tuple(tgt_lengths.shape)}, output_lengths {tuple(out_lengths.shape)}; all need B={B}."
            )
        if targets.numel() and int(tgt_lengths.max()) > targets.shape[1]:
            raise ValueError(f"CTC: a target length {int(tgt_lengths.max())} exceeds the padded width {targets.shape[1]}.")
        return log_probs, out_lengths.long(), targets.long(), tgt_lengths.long()

    def _per_sample(self, log_probs: Tensor, out_len: Tensor, targets: Tensor, tgt_len: Tensor) -> Tensor:
        losses = F.ctc_loss(log_probs.float(), targets, out_len, tgt_len, blank=self.blank,
                            reduction="none", zero_infinity=False)
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            message = (f"CTC: infinite loss for samples {rows}: their target (lengths {tgt_len[bad].tolist()}) cannot be "
                       f"aligned in the output length ({out_len[bad].tolist()} steps; repeated labels need a blank between). "
                       "Use wider inputs or a model with less downsampling, or CTC(zero_infinity=True) to skip them.")
            if not self.zero_infinity:
                raise ValueError(message)
            warnings.warn(message, stacklevel=3)
            losses = torch.where(bad, torch.zeros_like(losses), losses)
        if self.reduction == "mean":
            losses = losses / tgt_len.clamp_min(1).to(losses.dtype)
        return losses

    def loss(self, output, target, plan: MixPlan | None = None) -> Tensor:
        log_probs, out_len, targets, tgt_len = self._unpack(output, target)
        if plan is None:
            losses = self._per_sample(log_probs, out_len, targets, tgt_len)
        else:
            if plan.batch_size != log_probs.shape[1]:
                raise ValueError(f"CTC: the plan was drawn for batch size {plan.batch_size}; the output has "
                                 f"{log_probs.shape[1]}.")
            perm = plan.perm.to(log_probs.device)
            out_len = torch.maximum(out_len, out_len[perm])
            own = self._per_sample(log_probs, out_len, targets, tgt_len)
            other = self._per_sample(log_probs, out_len, targets[perm], tgt_len[perm])
            lam = plan.lam.to(own.device, own.dtype)
            losses = lam * own + (1 - lam) * other
        return losses.mean() if self.reduction == "mean" else losses.sum()
