"""Segmentation metrics on unmixed passes: Dice per class and mean Dice, pixel NLL and ECE.

Dice is MONAI's (``monai.metrics.compute_dice`` on one-hot predictions and truth; a class absent
from the truth of a sample counts as NaN and is skipped, as ``DiceMetric(reduction="mean_batch")``
does). Pixel NLL and the expected calibration error come from :mod:`mmix_applied.metrics.calibration`
(per pixel; binary and multilabel outputs count each label as a binary sigmoid). They measure
the calibrated likelihood that Manifold Mixup (Verma et al., ICML 2019) is known to improve. All
state is summed: exact under DDP (torchmetrics syncs it) and constant in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from mmix_applied.data.constants import SEGMENTATION_MODES
from mmix_applied.metrics.calibration import ExpectedCalibrationError, NegativeLogLikelihood

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics(torchmetrics.Metric):
    """Dice per class, mean Dice, pixel NLL and ECE of dense logits.

    ``update(logits, target)``: logits ``(B, C, *S)``; target as the Segmentation adapter takes it
    (multiclass ``(B, *S)`` class indices; binary ``(B, 1, *S)`` / multilabel ``(B, C, *S)`` of 0/1).
    Pixels equal to ``ignore_index`` count nowhere. ``compute()`` returns ``dice_<class name>``,
    ``mean_dice`` (over the foreground classes unless ``include_background``), ``nll`` and ``ece``.

    Args:
        num_classes: Output channels (1 for binary).
        mode: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
        ignore_index: Mask value left out.
        class_names: Names for the per-class keys (default ``class0``...; spaces become ``_``).
        include_background: Whether class 0 counts in ``mean_dice`` (multiclass).
        n_bins: ECE bins.
    """

    full_state_update = False

    def __init__(self, *, num_classes: int, mode: str = "multiclass", ignore_index: int | None = None,
                 class_names: Sequence[str] | None = None, include_background: bool = False, n_bins: int = 15) -> None:
        super().__init__()
        if mode not in SEGMENTATION_MODES:
            raise ValueError(f"mode={mode!r} is not one of {', '.join(SEGMENTATION_MODES)}")
        names = list(class_names) if class_names is not None else [f"class{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for num_classes={num_classes}: {names}")
        self.num_classes, self.mode, self.ignore_index = num_classes, mode, ignore_index
        self.class_names = [n.replace(" ", "_") for n in names]
        self.include_background = include_background
        self.nll = NegativeLogLikelihood(ignore_index=ignore_index)
        self.ece = ExpectedCalibrationError(n_bins=n_bins, ignore_index=ignore_index)
        self.add_state("dice_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("dice_count", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add one batch of logits and masks."""
        from monai.metrics import compute_dice

        logits, target = logits.detach().float(), target.detach().to(logits.device)
        if self.mode == "multiclass" and target.dim() == logits.dim():
            target = target[:, 0]
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
        clean = torch.where(valid, target, torch.zeros_like(target)).long()
        if self.mode == "multiclass":
            pred_1h = F.one_hot(logits.argmax(1), self.num_classes).movedim(-1, 1) * valid.unsqueeze(1)
            true_1h = F.one_hot(clean, self.num_classes).movedim(-1, 1) * valid.unsqueeze(1)
            scores, labels = logits, target.long()
        else:  # each label is a binary sigmoid output
            pred_1h, true_1h = (logits > 0) & valid, clean.bool() & valid
            b, c = logits.shape[:2]
            scores = logits.reshape(b * c, 1, *logits.shape[2:])
            labels = target.long().reshape(b * c, *target.shape[2:])
        dice = compute_dice(pred_1h.float(), true_1h.float(), include_background=True, ignore_empty=True)
        seen = ~torch.isnan(dice)
        self.dice_sum += torch.where(seen, dice, torch.zeros_like(dice)).sum(0).double()
        self.dice_count += seen.sum(0).double()
        self.nll.update(scores, labels)
        self.ece.update(scores, labels)

    def compute(self) -> dict[str, Tensor]:
        """``dice_<name>`` per class (NaN for a class never in the truth), ``mean_dice``, ``nll``, ``ece``."""
        per_class = self.dice_sum / self.dice_count
        out = {f"dice_{name}": per_class[i].float() for i, name in enumerate(self.class_names)}
        first = 1 if self.mode == "multiclass" and not self.include_background else 0
        out["mean_dice"] = torch.nanmean(per_class[first:]).float()
        out["nll"] = self.nll.compute()
        out["ece"] = self.ece.compute()
        return out

    def reset(self) -> None:
        """Reset the Dice sums and the NLL/ECE children."""
        super().reset()
        self.nll.reset()
        self.ece.reset()
