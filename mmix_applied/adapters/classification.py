"""Classification and multi-label adapters: soft targets mixed like the hidden states.

Manifold Mixup (Verma et al., ICML 2019) trains on ``lam * onehot(y) + (1 - lam) * onehot(y[perm])``
with a soft-target cross-entropy; label smoothing is applied to each one-hot before mixing.

Adapters note: ``Classification.mix_targets(y, plan)`` returns the ``(B, C)`` smoothed, mixed soft
target, so timm's ``SoftTargetCrossEntropy()(output, mix_targets(y, plan))`` equals
``Classification.loss(output, y, plan)``. timm's ``LabelSmoothingCrossEntropy`` rejects soft
targets: put the smoothing in the adapter (``label_smoothing=``) instead. Value checks run in
eager calls only (skipped under ``torch.compile``, see :mod:`mmix_applied.adapters.base`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmix_applied.core.plan import MixPlan

from .base import Adapter, check_batch, check_tensor, checking_values, mix_batch

__all__ = ["Classification", "MultiLabel"]


def _check_count(value: object, name: str, adapter: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{adapter}: {name} must be an int >= 1; received {value!r}.")
    return value


class Classification(Adapter):
    """Single-label classification with class-index or soft-vector targets.

    Args:
        num_classes: number of classes ``C``.
        label_smoothing: in [0, 1); each one-hot becomes ``(1 - s) * onehot + s / C``.
        validate: check target values on every eager call (one device sync); turn off on a hot GPU
            loop once the data is trusted. Under ``torch.compile`` the value checks are skipped.

    Shapes: output ``(B, C)`` logits; target ``(B,)`` int64 class indices in ``[0, C)`` or ``(B, C)``
    float probabilities.
    """

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0, validate: bool = True) -> None:
        super().__init__()
        self.num_classes = _check_count(num_classes, "num_classes", "Classification")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"Classification: label_smoothing must be in [0, 1); received {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)
        self.validate = validate

    def soft_targets(self, target: Tensor, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """Validated ``(B, C)`` soft targets, label smoothing applied."""
        target = check_tensor(target, "target", "Classification")
        C = self.num_classes
        if target.dim() == 1:
            if target.is_floating_point() or target.dtype == torch.bool:
                raise TypeError(
                    f"Classification: class-index targets must be an integer tensor; received dtype "
                    f"{target.dtype} of shape {tuple(target.shape)}. Use target.long(), or pass (B, {C}) probabilities."
                )
            if checking_values(self.validate) and target.numel() and (int(target.min()) < 0 or int(target.max()) >= C):
                raise ValueError(
                    f"Classification: class indices must be in [0, {C}); received values from "
                    f"{int(target.min())} to {int(target.max())}. Check num_classes={C} and the labels."
                )
            # one_hot by comparison: no value check inside, so it traces without a graph break
            soft = (target.unsqueeze(1) == torch.arange(C, device=target.device)).to(dtype)
        elif target.dim() == 2 and target.shape[1] == C and target.is_floating_point():
            if checking_values(self.validate) and not bool(torch.isfinite(target).all()):
                raise ValueError("Classification: soft targets hold NaN/Inf values; check the label pipeline.")
            soft = target.to(dtype)
        else:
            raise ValueError(
                f"Classification: target must be (B,) class indices or (B, {C}) float probabilities; received "
                f"shape {tuple(target.shape)} with dtype {target.dtype}."
            )
        if self.label_smoothing:
            soft = soft * (1.0 - self.label_smoothing) + self.label_smoothing / C
        return soft

    def mix_targets(self, target: Tensor, plan: MixPlan | None) -> Tensor:
        """``lam * soft(y) + (1 - lam) * soft(y[perm])``, shape ``(B, C)``, label smoothing applied.

        With ``plan=None`` (an unmixed step) the smoothed soft target itself. Pair it with a
        soft-target cross-entropy such as timm's ``SoftTargetCrossEntropy``.
        """
        soft = self.soft_targets(target)
        return soft if plan is None else mix_batch(soft, plan)

    def loss(self, output: Tensor, target: Tensor, plan: MixPlan | None = None) -> Tensor:
        """Soft-target cross-entropy of the logits against the mixed, smoothed target.

        ``-(mix_targets(target, plan) * log_softmax(output)).sum(1).mean()``, computed in float32;
        with ``plan=None`` and no smoothing it equals ``F.cross_entropy(output, target)``.

        Args:
            output: ``(B, C)`` logits.
            target: ``(B,)`` int64 class indices in ``[0, C)`` or ``(B, C)`` float probabilities.
            plan: The step's :class:`~mmix_applied.core.plan.MixPlan`; ``None`` for an unmixed step.

        Returns:
            The batch-mean loss, a float32 scalar.

        Raises:
            TypeError: ``output`` or ``target`` is not a tensor, or class indices are not integers.
            ValueError: A shape does not match ``(B, C)`` / ``(B,)``, the batch sizes (or the plan's)
                differ, a class index is outside ``[0, C)`` or a soft target holds NaN/Inf (value
                checks in eager calls only).
        """
        output = check_tensor(output, "output", "Classification")
        if output.dim() != 2 or output.shape[1] != self.num_classes:
            raise ValueError(
                f"Classification: output must be (B, {self.num_classes}) logits; received shape {tuple(output.shape)}. "
                "Check the model's num_classes."
            )
        check_batch(output, check_tensor(target, "target", "Classification"), "Classification")
        soft = self.mix_targets(target, plan)
        logp = F.log_softmax(output.float(), dim=1)
        return -(soft.to(logp.device) * logp).sum(dim=1).mean()


class MultiLabel(Adapter):
    """Multi-label classification: BCE-with-logits on interpolated 0/1 vectors.

    Args:
        num_labels: number of labels ``L``.
        validate: check that target values are in [0, 1] on every eager call (skipped under
            ``torch.compile``).

    Shapes: output ``(B, L)`` logits; target ``(B, L)`` with values in [0, 1] (any numeric dtype).
    """

    def __init__(self, num_labels: int, *, validate: bool = True) -> None:
        super().__init__()
        self.num_labels = _check_count(num_labels, "num_labels", "MultiLabel")
        self.validate = validate

    def _targets(self, target: Tensor) -> Tensor:
        target = check_tensor(target, "target", "MultiLabel")
        if target.dim() != 2 or target.shape[1] != self.num_labels:
            raise ValueError(
                f"MultiLabel: target must be (B, {self.num_labels}); received shape {tuple(target.shape)}."
            )
        target = target.float()
        if checking_values(self.validate) and target.numel() and (float(target.min()) < 0 or float(target.max()) > 1):
            raise ValueError(
                f"MultiLabel: target values must be in [0, 1]; received {float(target.min())} to {float(target.max())}."
            )
        return target

    def mix_targets(self, target: Tensor, plan: MixPlan | None) -> Tensor:
        """``lam * y + (1 - lam) * y[perm]`` as float (``plan=None``: ``y`` as float), for
        ``F.binary_cross_entropy_with_logits(output, mixed)``."""
        y = self._targets(target)
        return y if plan is None else mix_batch(y, plan)

    def loss(self, output: Tensor, target: Tensor, plan: MixPlan | None = None) -> Tensor:
        """Binary cross-entropy with logits against the mixed 0/1 vectors (the mean over batch and labels).

        Args:
            output: ``(B, L)`` logits.
            target: ``(B, L)`` values in ``[0, 1]``, any numeric dtype.
            plan: The step's :class:`~mmix_applied.core.plan.MixPlan`; ``None`` for an unmixed step.

        Returns:
            ``F.binary_cross_entropy_with_logits(output, mix_targets(target, plan))``, a float32 scalar.

        Raises:
            TypeError: ``output`` or ``target`` is not a tensor.
            ValueError: A shape is not ``(B, L)``, the batch sizes (or the plan's) differ, or a
                target value is outside ``[0, 1]`` (checked in eager calls only).
        """
        output = check_tensor(output, "output", "MultiLabel")
        if output.dim() != 2 or output.shape[1] != self.num_labels:
            raise ValueError(
                f"MultiLabel: output must be (B, {self.num_labels}) logits; received shape {tuple(output.shape)}."
            )
        check_batch(output, check_tensor(target, "target", "MultiLabel"), "MultiLabel")
        y = self.mix_targets(target, plan)
        return F.binary_cross_entropy_with_logits(output.float(), y.to(output.device))
