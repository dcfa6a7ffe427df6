"""Segmentation metrics on unmixed passes: Dice and HD95 per class and their means, pixel NLL and ECE.

Dice is MONAI's (``monai.metrics.compute_dice`` on one-hot predictions and truth; a class absent
from the truth of a sample counts as NaN and is skipped, as ``DiceMetric(reduction="mean_batch")``
does). ``mean_dice`` is the mean over classes (foreground only unless ``include_background``) of
the per-class Dice, each itself the mean over the samples where the class is in the truth; a
class never in the truth is NaN and left out (``nanmean``). HD95 is MONAI's
(``compute_hausdorff_distance(percentile=95)``, 2D and 3D): a class empty in the truth *or* in the
prediction of a sample gives NaN there (MONAI 1.6) and is skipped, as
``HausdorffDistanceMetric(reduction="mean_batch")`` does; ``mean_hd95`` averages the classes as
``mean_dice`` does. A class predicted nowhere where the truth has it is therefore *not*
penalised by HD95 (Dice is 0 there): read the two together. Distances are in millimetres when
the pixel (voxel) spacing is known (``spacing``, or per batch in :meth:`SegmentationMetrics.update`,
passed to MONAI's ``spacing``), else in index units (pixels or voxels); :attr:`hd95_unit` says
which. Pixel NLL, the expected calibration error and its direction come from
:mod:`mmix_applied.metrics.calibration` (per pixel; binary and multilabel outputs count each
label as a binary sigmoid). They measure the calibrated likelihood that Manifold Mixup (Verma
et al., ICML 2019) is known to improve. All state is summed: exact
under DDP (torchmetrics syncs it) and constant in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from mmix_applied.data.constants import SEGMENTATION_MODES
from mmix_applied.metrics.calibration import ConfidenceGap, ExpectedCalibrationError, NegativeLogLikelihood

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics(torchmetrics.Metric):
    """Dice per class, mean Dice, pixel NLL, ECE and its direction of dense logits (and HD95).

    ``update(logits, target)``: logits ``(B, C, *S)``; target as the Segmentation adapter takes it
    (multiclass ``(B, *S)`` class indices; binary ``(B, 1, *S)`` / multilabel ``(B, C, *S)`` of 0/1).
    Pixels equal to ``ignore_index`` count nowhere. ``compute()`` returns ``dice_<class name>``,
    ``mean_dice`` (over the foreground classes unless ``include_background``), ``nll``, ``ece`` and
    ``conf_gap`` (mean confidence - accuracy over the pixels: > 0 overconfident); with ``hd95``,
    ``hd95_<class name>`` and ``mean_hd95`` (millimetres with a spacing, else pixels/voxels); with
    ``calibration_only``, ``nll``, ``ece`` and ``conf_gap`` alone (what a temperature changes).

    Args:
        num_classes: Output channels (1 for binary).
        mode: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
        ignore_index: Mask value left out.
        class_names: Names for the per-class keys (default ``class0``...; spaces become ``_``).
        include_background: Whether class 0 counts in ``mean_dice`` (multiclass).
        n_bins: ECE bins.
        hd95: Also compute the 95th-percentile Hausdorff distance per class (CPU-heavy: the engine
            does it on the test split only).
        calibration_only: Compute NLL and ECE only.
        spacing: Pixel (voxel) size in mm per spatial axis, for HD95 in mm (``None``: index units;
            a batch's own spacing passed to :meth:`update` wins).
    """

    full_state_update = False

    def __init__(self, *, num_classes: int, mode: str = "multiclass", ignore_index: int | None = None,
                 class_names: Sequence[str] | None = None, include_background: bool = False, n_bins: int = 15,
                 hd95: bool = False, calibration_only: bool = False,
                 spacing: Sequence[float] | None = None) -> None:
        super().__init__()
        if mode not in SEGMENTATION_MODES:
            raise ValueError(f"mode={mode!r} is not one of {', '.join(SEGMENTATION_MODES)}")
        names = list(class_names) if class_names is not None else [f"class{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for num_classes={num_classes}: {names}")
        self.num_classes, self.mode, self.ignore_index = num_classes, mode, ignore_index
        self.class_names = [n.replace(" ", "_") for n in names]
        self.include_background = include_background
        self.hd95, self.calibration_only = hd95 and not calibration_only, calibration_only
        self.nll = NegativeLogLikelihood(ignore_index=ignore_index)
        self.ece = ExpectedCalibrationError(n_bins=n_bins, ignore_index=ignore_index)
        self.conf_gap = ConfidenceGap(ignore_index=ignore_index)
        self.spacing = None if spacing is None else tuple(float(v) for v in spacing)
        if self.spacing is not None and not all(v > 0 for v in self.spacing):
            raise ValueError(f"spacing must be positive sizes (mm) per spatial axis; received {spacing!r}")
        self._spacing_seen = False
        self._spatial_dims: int | None = None
        self.add_state("dice_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("dice_count", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hd_sum", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hd_count", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def hd95_unit(self) -> str:
        """``"mm"`` when HD95 is measured with a spacing, else ``"pixels"`` / ``"voxels"``."""
        if self.spacing is not None or self._spacing_seen:
            return "mm"
        return "voxels" if self._spatial_dims == 3 else "pixels"

    def update(self, logits: Tensor, target: Tensor, *, spacing: Sequence[float] | Tensor | None = None) -> None:
        """Add one batch of logits and masks (``spacing``: this batch's pixel size in mm, one row per sample
        ``(B, D)`` or one ``(D,)`` for all; default the metric's ``spacing``)."""
        from monai.metrics import compute_dice

        logits, target = logits.detach().float(), target.detach().to(logits.device)
        self._spatial_dims = logits.dim() - 2
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
        self.nll.update(scores, labels)
        self.ece.update(scores, labels)
        self.conf_gap.update(scores, labels)
        if self.calibration_only:
            return
        dice = compute_dice(pred_1h.float(), true_1h.float(), include_background=True, ignore_empty=True)
        seen = ~torch.isnan(dice)
        self.dice_sum += torch.where(seen, dice, torch.zeros_like(dice)).sum(0).double()
        self.dice_count += seen.sum(0).double()
        if self.hd95:
            hd = _hd95(pred_1h.float(), true_1h.float(), spacing=self._batch_spacing(spacing, logits))
            seen = ~torch.isnan(hd)
            self.hd_sum += torch.where(seen, hd, torch.zeros_like(hd)).sum(0).double().to(self.hd_sum.device)
            self.hd_count += seen.sum(0).double().to(self.hd_count.device)

    def compute(self) -> dict[str, Tensor]:
        """``dice_<name>`` per class (NaN for a class never in the truth), ``mean_dice``, ``nll``, ``ece``
        (and ``hd95_<name>``, ``mean_hd95``)."""
        if self.calibration_only:
            return {"nll": self.nll.compute(), "ece": self.ece.compute(), "conf_gap": self.conf_gap.compute()}
        first = 1 if self.mode == "multiclass" and not self.include_background else 0
        out: dict[str, Tensor] = {}
        for prefix, total, count, on in (("dice", self.dice_sum, self.dice_count, True),
                                         ("hd95", self.hd_sum, self.hd_count, self.hd95)):
            if not on:
                continue
            per_class = total / count
            out.update({f"{prefix}_{name}": per_class[i].float() for i, name in enumerate(self.class_names)})
            out[f"mean_{prefix}"] = torch.nanmean(per_class[first:]).float()
        out["nll"] = self.nll.compute()
        out["ece"] = self.ece.compute()
        out["conf_gap"] = self.conf_gap.compute()
        return out

    def reset(self) -> None:
        """Reset the Dice sums and the NLL/ECE children."""
        super().reset()
        self.nll.reset()
        self.ece.reset()
        self.conf_gap.reset()

    def _batch_spacing(self, spacing: Sequence[float] | Tensor | None, logits: Tensor) -> list[list[float]] | None:
        """Per-sample spacing rows for MONAI (``None``: index units)."""
        if spacing is None:
            spacing = self.spacing
        if spacing is None:
            return None
        rows = torch.as_tensor(spacing, dtype=torch.float64).cpu()
        dims, batch = logits.dim() - 2, logits.shape[0]
        rows = rows.expand(batch, -1) if rows.dim() == 1 else rows
        if tuple(rows.shape) != (batch, dims):
            raise ValueError(f"spacing must give {dims} sizes (mm) per sample of {dims}D masks; received shape "
                             f"{tuple(rows.shape)} for a batch of {batch}")
        self._spacing_seen = True
        return rows.tolist()


def _hd95(pred: Tensor, truth: Tensor, *, spacing: list[list[float]] | None = None) -> Tensor:
    """MONAI's HD95 per sample and class, ``(B, C)`` (in mm with ``spacing``); NaN where the truth or the
    prediction is empty."""
    import warnings

    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():  # MONAI warns for every empty class; NaN says it
        warnings.simplefilter("ignore")
        return compute_hausdorff_distance(pred, truth, include_background=True, percentile=95,
                                          spacing=spacing).float()
