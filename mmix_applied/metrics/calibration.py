"""Calibration metrics: NLL, expected calibration error (ECE) and the Brier score.

Calibrated likelihood is Manifold Mixup's headline result (Verma et al., ICML 2019, section 5),
so these are first-class. Each metric takes class scores ``(N, C)`` or dense ``(B, C, *spatial)``
(flattened per pixel/voxel) with integer targets ``(N,)`` / ``(B, *spatial)``; ``C == 1`` means a
binary sigmoid output. Pure functions do the math; the torchmetrics classes keep only sums
(constant memory, summed across DDP processes), which matters for dense outputs where
torchmetrics' ``MulticlassCalibrationError`` would store every pixel. ECE uses torchmetrics'
binning exactly (``n_bins`` equal-width bins on the top-1 confidence, L1 norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection

__all__ = [
    "Accuracy",
    "BrierScore",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
    "brier_score",
    "calibration_bins",
    "classification_metrics",
    "expected_calibration_error",
    "flatten_scores",
    "negative_log_likelihood",
]


def flatten_scores(preds: Tensor, target: Tensor, *, from_logits: bool = True,
                   ignore_index: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Turn scores and targets into ``(log_probs (M, C), probs (M, C), target (M,))``.

    Dense ``(B, C, *S)`` scores become one row per position; ``C == 1`` is a binary sigmoid
    (or probability) output expanded to two classes; positions equal to ``ignore_index`` are dropped.

    Raises:
        ValueError: On shape mismatches or targets outside ``[0, C)``.
    """
    if preds.dim() < 2:
        raise ValueError(f"preds must be (N, C) or (B, C, *spatial), received shape {tuple(preds.shape)}")
    if target.is_floating_point():
        raise ValueError(f"target must hold integer class indices, received dtype {target.dtype}")
    if preds.dim() > 2:
        c = preds.shape[1]
        preds = preds.movedim(1, -1).reshape(-1, c)
    target = target.reshape(-1).long()
    if target.shape[0] != preds.shape[0]:
        raise ValueError(f"{preds.shape[0]} score rows (samples x positions) but {target.shape[0]} targets")
    if ignore_index is not None:
        keep = target != ignore_index
        preds, target = preds[keep], target[keep]
    preds = preds.float()
    if preds.shape[1] == 1:
        if from_logits:
            log_p1, log_p0 = F.logsigmoid(preds), F.logsigmoid(-preds)
        else:
            p = preds.clamp(0.0, 1.0)
            log_p1, log_p0 = p.clamp_min(1e-12).log(), (1 - p).clamp_min(1e-12).log()
        log_probs = torch.cat([log_p0, log_p1], dim=1)
    elif from_logits:
        log_probs = F.log_softmax(preds, dim=1)
    else:
        log_probs = preds.clamp_min(1e-12).log()
    num_classes = log_probs.shape[1]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        bad = target[(target < 0) | (target >= num_classes)][0].item()
        raise ValueError(f"target value {bad} is outside [0, {num_classes}); set ignore_index for void labels")
    probs = log_probs.exp() if from_logits or preds.shape[1] == 1 else preds
    return log_probs, probs, target


def negative_log_likelihood(preds: Tensor, target: Tensor, *, from_logits: bool = True,
                            ignore_index: int | None = None) -> Tensor:
    """Mean ``-log p(y)`` over samples (and positions)."""
    log_probs, _, target = flatten_scores(preds, target, from_logits=from_logits, ignore_index=ignore_index)
    return -log_probs.gather(1, target[:, None]).mean()


def brier_score(preds: Tensor, target: Tensor, *, from_logits: bool = True,
                ignore_index: int | None = None) -> Tensor:
    """Mean over samples of ``sum_c (p_c - onehot(y)_c)^2`` (multi-class Brier score, range [0, 2])."""
    _, probs, target = flatten_scores(preds, target, from_logits=from_logits, ignore_index=ignore_index)
    onehot = F.one_hot(target, probs.shape[1]).to(probs.dtype)
    return ((probs - onehot) ** 2).sum(1).mean()


def calibration_bins(probs: Tensor, target: Tensor, *, n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin ``(count, sum of confidence, sum of accuracy)`` of the top-1 predictions, ``n_bins`` equal bins."""
    confidence, predicted = probs.max(1)
    correct = (predicted == target).to(probs.dtype)
    boundaries = torch.linspace(0, 1, n_bins + 1, device=probs.device, dtype=probs.dtype)
    index = (torch.bucketize(confidence, boundaries, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, device=probs.device, dtype=torch.float64)
    conf = torch.zeros_like(count)
    acc = torch.zeros_like(count)
    count.index_add_(0, index, torch.ones_like(confidence, dtype=torch.float64))
    conf.index_add_(0, index, confidence.double())
    acc.index_add_(0, index, correct.double())
    return count, conf, acc


def _ece_from_bins(count: Tensor, conf: Tensor, acc: Tensor) -> Tensor:
    total = count.sum()
    if total == 0:
        return torch.tensor(0.0)
    nonempty = count > 0
    gap = (acc[nonempty] / count[nonempty] - conf[nonempty] / count[nonempty]).abs()
    return (gap * count[nonempty] / total).sum().float()


def expected_calibration_error(preds: Tensor, target: Tensor, *, n_bins: int = 15, from_logits: bool = True,
                               ignore_index: int | None = None) -> Tensor:
    """ECE: ``sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width confidence bins."""
    _, probs, target = flatten_scores(preds, target, from_logits=from_logits, ignore_index=ignore_index)
    return _ece_from_bins(*calibration_bins(probs, target, n_bins=n_bins))


class _ScoreMetric(Metric):
    is_differentiable = False
    full_state_update = False

    def __init__(self, *, from_logits: bool = True, ignore_index: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.from_logits = from_logits
        self.ignore_index = ignore_index

    def _flatten(self, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return flatten_scores(preds, target, from_logits=self.from_logits, ignore_index=self.ignore_index)


class _MeanScoreMetric(_ScoreMetric):
    """The mean over samples (and positions) of a per-sample score; subclasses define ``_values``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _values(self, log_probs: Tensor, probs: Tensor, target: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch."""
        log_probs, probs, target = self._flatten(preds, target)
        self.total += self._values(log_probs, probs, target).double().sum()
        self.count += target.numel()

    def compute(self) -> Tensor:
        """The mean so far."""
        return (self.total / self.count.clamp_min(1)).float()


class Accuracy(_MeanScoreMetric):
    """Top-1 accuracy over samples (and positions), with the same input handling as the others."""

    higher_is_better = True

    def _values(self, log_probs: Tensor, probs: Tensor, target: Tensor) -> Tensor:
        return log_probs.argmax(1) == target


class NegativeLogLikelihood(_MeanScoreMetric):
    """Mean negative log-likelihood of the true class (lower is better).

    Args:
        from_logits: Scores are logits (else probabilities).
        ignore_index: Target value to leave out.
    """

    higher_is_better = False

    def _values(self, log_probs: Tensor, probs: Tensor, target: Tensor) -> Tensor:
        return -log_probs.gather(1, target[:, None])


class BrierScore(_MeanScoreMetric):
    """Multi-class Brier score ``mean sum_c (p_c - onehot_c)^2`` (lower is better)."""

    higher_is_better = False

    def _values(self, log_probs: Tensor, probs: Tensor, target: Tensor) -> Tensor:
        onehot = F.one_hot(target, probs.shape[1]).to(probs.dtype)
        return ((probs - onehot) ** 2).sum(1)


class ExpectedCalibrationError(_ScoreMetric):
    """Expected calibration error over ``n_bins`` equal-width bins (lower is better).

    Keeps per-bin sums only; :meth:`bins` returns them for a reliability diagram
    (:func:`mmix_applied.reports.figures.reliability_diagram`).
    """

    higher_is_better = False

    def __init__(self, *, n_bins: int = 15, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, received {n_bins}")
        self.n_bins = n_bins
        for name in ("bin_count", "bin_conf", "bin_acc"):
            self.add_state(name, torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch."""
        _, probs, target = self._flatten(preds, target)
        count, conf, acc = calibration_bins(probs, target, n_bins=self.n_bins)
        self.bin_count += count
        self.bin_conf += conf
        self.bin_acc += acc

    def compute(self) -> Tensor:
        """The ECE so far."""
        return _ece_from_bins(self.bin_count, self.bin_conf, self.bin_acc)

    def bins(self) -> dict[str, Tensor]:
        """Per-bin ``count``, mean ``confidence`` and ``accuracy`` (NaN for empty bins), and ``edges``."""
        count = self.bin_count
        safe = count.clamp_min(1)
        empty = count == 0
        return {"count": count.clone(), "confidence": (self.bin_conf / safe).masked_fill(empty, float("nan")),
                "accuracy": (self.bin_acc / safe).masked_fill(empty, float("nan")),
                "edges": torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64)}


def classification_metrics(*, from_logits: bool = True, ignore_index: int | None = None,
                           n_bins: int = 15) -> MetricCollection:
    """``acc``, ``nll``, ``ece`` and ``brier`` for ``(N, C)`` or dense ``(B, C, *)`` scores."""
    options = {"from_logits": from_logits, "ignore_index": ignore_index}
    return MetricCollection({
        "acc": Accuracy(**options),
        "nll": NegativeLogLikelihood(**options),
        "ece": ExpectedCalibrationError(n_bins=n_bins, **options),
        "brier": BrierScore(**options),
    }, compute_groups=False)
