"""CTC adapter: sequence targets cannot be interpolated, so the losses are mixed.

For a mixed state, ``loss = lam * CTC(out, y) + (1 - lam) * CTC(out, y[perm])`` per sample, as
in Manifold Mixup for handwriting recognition (Moysset & Messina, ICDAR 2019). Per-sample lam
is respected. The mixed sequence carries content of both lines, so its length is the longer of
the two: both terms use ``max(len_i, len_perm[i])`` output steps.

Adapters note: label sequences cannot be interpolated, so ``CTC.mix_targets`` raises a TypeError
that points to ``CTC.loss(output, target, plan)``. Targets are checked in eager calls (a blank
inside a target, a label outside the output's classes, a length over the padded width, a target
that cannot be aligned); under ``torch.compile`` these value checks are skipped and the loss
traces with no graph break (an unalignable sample then gives an infinite loss, or 0 with
``zero_infinity=True``, without the warning).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmix_applied.core.plan import MixPlan
from mmix_applied.errors import MmixWarning

from .base import Adapter, check_tensor, checking_values

__all__ = ["CTC", "ctc_per_sample"]


@torch.library.custom_op("mmix_applied::ctc_per_sample", mutates_args=())
def ctc_per_sample(log_probs: Tensor, targets: Tensor, out_len: Tensor, tgt_len: Tensor, blank: int,
                   need_grad: bool) -> tuple[Tensor, Tensor]:
    """Per-sample ``F.ctc_loss`` (``reduction="none"``) as one opaque op, and its gradient.

    ``aten._ctc_loss`` with tensor lengths has a data-dependent output shape (its ``log_alpha``),
    so Dynamo breaks the graph at it. Wrapped as a custom op with a fixed-shape fake, the compiled
    step keeps one graph; the op runs torch's own CTC forward and backward kernels
    (``aten._ctc_loss`` and ``aten._ctc_loss_backward`` with unit weights, which give every
    sample's gradient in its own batch column).

    Returns:
        ``(losses (B,), grad (T, B, C))``; infinite losses (unalignable targets) stay infinite and
        their gradient columns are 0. ``grad`` is empty when ``need_grad`` is False.
    """
    nll, log_alpha = torch.ops.aten._ctc_loss.Tensor(log_probs, targets, out_len, tgt_len, blank, False)
    if not need_grad:
        return nll, log_probs.new_empty(0)
    grad = torch.ops.aten._ctc_loss_backward.Tensor(torch.ones_like(nll), log_probs, targets, out_len, tgt_len,
                                                   nll, log_alpha, blank, True)
    return nll, grad


@ctc_per_sample.register_fake
def _(log_probs: Tensor, targets: Tensor, out_len: Tensor, tgt_len: Tensor, blank: int,
      need_grad: bool) -> tuple[Tensor, Tensor]:
    grad = torch.empty_like(log_probs) if need_grad else log_probs.new_empty(0)
    return log_probs.new_empty(log_probs.shape[1]), grad


def _ctc_setup(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1])


def _ctc_backward(ctx: Any, grad_losses: Tensor, _grad_grad: Tensor) -> tuple[Tensor | None, ...]:
    (grad,) = ctx.saved_tensors
    if grad.numel() == 0:
        raise RuntimeError("ctc_per_sample was called with need_grad=False; pass need_grad=True to backpropagate.")
    return grad * grad_losses.to(grad.dtype).view(1, -1, 1), None, None, None, None, None


ctc_per_sample.register_autograd(_ctc_backward, setup_context=_ctc_setup)


class CTC(Adapter):
    """Connectionist temporal classification with loss mixing.

    Args:
        blank: index of the blank symbol.
        reduction: ``"mean"`` (each sample's loss divided by its target length, then the batch mean,
            as ``F.ctc_loss``) or ``"sum"``.
        zero_infinity: replace infinite losses (target longer than the output allows) by 0 with a
            warning, instead of raising.
        validate: check target values on every eager call: labels in ``[0, C)`` other than the blank
            within each target's length, lengths within the padded width, alignable targets (skipped
            under ``torch.compile``).

    Shapes: output log-probabilities ``(T, B, C)`` or a pair ``(log_probs, output_lengths (B,))``;
    target a pair ``(padded_targets (B, S), target_lengths (B,))`` of integer tensors.
    """

    def __init__(self, *, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False,
                 validate: bool = True) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"CTC: reduction must be 'mean' or 'sum'; received {reduction!r}.")
        if isinstance(blank, bool) or not isinstance(blank, int) or blank < 0:
            raise ValueError(f"CTC: blank must be an int >= 0; received {blank!r}.")
        self.blank, self.reduction, self.zero_infinity = blank, reduction, zero_infinity
        self.validate = validate

    def mix_targets(self, target: Any, plan: MixPlan | None) -> Tensor:
        """Always a TypeError: CTC label sequences cannot be interpolated; the losses are mixed instead."""
        raise TypeError(
            "CTC: label sequences cannot be interpolated, so CTC has no mixed target; received a call to "
            "mix_targets. Use adapter.loss(output, target, plan), which mixes the two CTC losses "
            "(lam * CTC(out, y) + (1 - lam) * CTC(out, y[perm]))."
        )

    def _unpack(self, output, target) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if isinstance(output, (tuple, list)):
            if len(output) != 2:
                raise ValueError(f"CTC: output must be log_probs or (log_probs, output_lengths); received "
                                 f"{len(output)} items.")
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
            raise TypeError(f"CTC: targets and lengths must be integer tensors; received {targets.dtype} and "
                            f"{tgt_lengths.dtype}.")
        if targets.dim() != 2 or targets.shape[0] != B or tgt_lengths.shape != (B,) or out_lengths.shape != (B,):
            raise ValueError(
                f"CTC: batch mismatch: log_probs {tuple(log_probs.shape)} (T, B, C), padded_targets "
                f"{tuple(targets.shape)} "
                f"(B, S), target_lengths {tuple(tgt_lengths.shape)}, output_lengths {tuple(out_lengths.shape)}; "
                f"all need B={B}."
            )
        if checking_values(self.validate):
            self._check_values(targets, tgt_lengths, C)
        return log_probs, out_lengths.long(), targets.long(), tgt_lengths.long()

    def _check_values(self, targets: Tensor, lengths: Tensor, num_classes: int) -> None:
        """Eager checks of lengths and labels; each error names the first bad sample and its value."""
        S = targets.shape[1]
        bad_len = (lengths < 0) | (lengths > S)
        inside = torch.arange(S, device=targets.device).unsqueeze(0) < lengths.to(targets.device).unsqueeze(1)
        out_of_range = inside & ((targets < 0) | (targets >= num_classes))
        blank = inside & (targets == self.blank)
        if not bool(bad_len.any() | out_of_range.any() | blank.any()):  # one device sync when all is well
            return
        if bool(bad_len.any()):
            i = int(bad_len.nonzero()[0, 0])
            raise ValueError(f"CTC: target length of sample {i} is {int(lengths[i])}; lengths must be in [0, {S}] "
                             f"(the padded width). Check the collate function.")
        labels = f"[0, {num_classes}) except the blank {self.blank}"
        if bool(out_of_range.any()):
            i, j = (int(v) for v in out_of_range.nonzero()[0])
            raise ValueError(f"CTC: target of sample {i} holds label {int(targets[i, j])} at position {j}, outside the "
                             f"output's {num_classes} classes; labels must be in {labels}. Check the charset size "
                             "and the model's number of classes.")
        if bool(blank.any()):
            i, j = (int(v) for v in blank.nonzero()[0])
            raise ValueError(f"CTC: target of sample {i} holds the blank {self.blank} at position {j} (within "
                             f"its length "
                             f"{int(lengths[i])}); labels must be in {labels}. Encode characters from "
                             f"{1 if self.blank == 0 else 0}, or set CTC(blank=...) to the model's blank index.")

    def _per_sample(self, log_probs: Tensor, out_len: Tensor, targets: Tensor, tgt_len: Tensor) -> Tensor:
        log_probs = log_probs.float()
        if torch.compiler.is_compiling():  # one opaque op, no graph break; no sync, so no check or warning
            need_grad = log_probs.requires_grad and torch.is_grad_enabled()
            losses, _ = ctc_per_sample(log_probs, targets, out_len, tgt_len, self.blank, need_grad)
            if self.zero_infinity:
                losses = torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses))
            return self._reduce(losses, tgt_len)
        losses = F.ctc_loss(log_probs, targets, out_len, tgt_len, blank=self.blank,
                            reduction="none", zero_infinity=False)
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            message = (f"CTC: infinite loss for samples {rows}: their target (lengths {tgt_len[bad].tolist()}) "
                       f"cannot be "
                       f"aligned in the output length ({out_len[bad].tolist()} steps; repeated labels need a "
                       f"blank between). "
                       "Use wider inputs or a model with less downsampling, or CTC(zero_infinity=True) to skip them.")
            if not self.zero_infinity:
                raise ValueError(message)
            warnings.warn(message, MmixWarning, stacklevel=3)
            losses = torch.where(bad, torch.zeros_like(losses), losses)
        return self._reduce(losses, tgt_len)

    def _reduce(self, losses: Tensor, tgt_len: Tensor) -> Tensor:
        if self.reduction == "mean":
            losses = losses / tgt_len.clamp_min(1).to(losses.dtype)
        return losses

    def loss(self, output: Tensor | tuple[Tensor, Tensor], target: tuple[Tensor, Tensor],
             plan: MixPlan | None = None) -> Tensor:
        """The CTC loss, or under a plan ``lam * CTC(out, y) + (1 - lam) * CTC(out, y[perm])`` per sample.

        Unmixed, it equals ``F.ctc_loss`` with the same ``blank`` and ``reduction``. Mixed, both
        terms use ``max(len_i, len_perm[i])`` output steps and each sample its own ``lam``.

        Args:
            output: ``(T, B, C)`` log-probabilities, or a pair ``(log_probs, output_lengths (B,))``
                when the lines have different output lengths.
            target: A pair ``(padded_targets (B, S), target_lengths (B,))`` of integer tensors;
                labels in ``[0, C)`` other than the blank.
            plan: The step's :class:`~mmix_applied.core.plan.MixPlan`; ``None`` for an unmixed step.

        Returns:
            The loss, a float32 scalar: the batch mean of each sample's loss divided by its target
            length (``reduction="mean"``) or the sum (``"sum"``).

        Raises:
            TypeError: An argument is not a tensor or a pair of tensors, or targets are not integer.
            ValueError: Shapes or batch sizes (or the plan's) differ, the blank is outside the
                output's classes, a target label or length is invalid, or a target cannot be
                aligned with ``zero_infinity=False`` (value checks in eager calls only).
        """
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
