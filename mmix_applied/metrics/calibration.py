"""Calibration metrics: NLL, expected calibration error (ECE, equal-width and equal-mass), Brier.

Calibrated likelihood is Manifold Mixup's headline result (Verma et al., ICML 2019, section 5),
so these are first-class. Each metric takes class scores ``(N, C)`` or dense ``(B, C, *spatial)``
(flattened per pixel/voxel) with integer targets ``(N,)`` / ``(B, *spatial)``; ``C == 1`` means a
binary sigmoid output. Scores are logits by default (``from_logits=True``); probabilities
(``from_logits=False``) must lie in ``[0, 1]``. Pure functions do the math; the torchmetrics
classes of the equal-width ECE, NLL and Brier keep only sums (constant memory, summed across DDP
processes), which matters for dense outputs where torchmetrics' ``MulticlassCalibrationError``
would store every pixel.

ECE (Guo et al., ICML 2017): ``sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` bins of the
top-1 confidence, one implementation (:func:`_ece_from_bins`) for both binnings: equal-width bins
``[lo, hi)`` with the last one closed, ``[lo, 1]`` (the textbook bins; torchmetrics 1.9 instead
counts a confidence of exactly 1.0 in an extra bin of its own, torchmetrics issue #3510), and
equal-mass bins (adaptive ECE, Nixon et al., CVPR-W 2019). :class:`ConfidenceGap` is the signed
``mean confidence - accuracy``: above 0 the model is overconfident, below 0 underconfident.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection

__all__ = [
    "Accuracy",
    "AdaptiveCalibrationError",
    "BrierScore",
    "ConfidenceGap",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
    "adaptive_calibration_bins",
    "adaptive_ece",
    "brier_score",
    "calibration_bins",
    "calibration_curve",
    "classification_metrics",
    "confidence_gap",
    "expected_calibration_error",
    "flatten_scores",
    "negative_log_likelihood",
]

_PROBABILITY_SLACK = 1e-6  # float rounding of a softmax may leave a probability a hair above 1


def flatten_scores(preds: Tensor, target: Tensor, *, from_logits: bool = True,
                   ignore_index: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Turn scores and targets into ``(log_probs (M, C), probs (M, C), target (M,))``.

    Dense ``(B, C, *S)`` scores become one row per position; ``C == 1`` is a binary sigmoid
    (or probability) output expanded to two classes; positions equal to ``ignore_index`` are dropped.

    Raises:
        ValueError: On shape mismatches, targets outside ``[0, C)``, or (``from_logits=False``)
            scores outside ``[0, 1]``.
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
    if not from_logits:
        _check_probabilities(preds)
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


def _check_probabilities(preds: Tensor) -> None:
    if not preds.numel():
        return
    lo, hi = float(preds.min()), float(preds.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -_PROBABILITY_SLACK or hi > 1 + _PROBABILITY_SLACK:
        raise ValueError(f"from_logits=False takes probabilities in [0, 1]; received scores in [{lo:.4g}, {hi:.4g}]. "
                         "Pass logits with from_logits=True (the default), or softmax/sigmoid them first")


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
    """Per-bin ``(count, sum of confidence, sum of accuracy)`` of the top-1 predictions, ``n_bins`` equal bins.

    Bin ``b`` holds confidences in ``[b / n, (b + 1) / n)``; the last bin is closed, ``[1 - 1 / n, 1]``
    (``numpy.histogram``'s bins; torchmetrics 1.9 puts a confidence of exactly 1.0 in an extra bin).
    """
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
    """``sum_b (n_b / N) |acc_b - conf_b|`` from per-bin count and sums (any binning); 0 when empty."""
    total = count.sum()
    if total == 0:
        return torch.tensor(0.0)
    nonempty = count > 0
    gap = (acc[nonempty] / count[nonempty] - conf[nonempty] / count[nonempty]).abs()
    return (gap * count[nonempty] / total).sum().float()


def _top1(probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    confidence, predicted = probs.max(1)
    return confidence, (predicted == target).to(confidence.dtype)


def adaptive_calibration_bins(confidence: Tensor, correct: Tensor, *,
                              n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin ``(count, sum of confidence, sum of correct)`` over equal-mass bins.

    Predictions are sorted by confidence (stable) and cut into ``n_bins`` runs whose sizes differ
    by at most one, the first ``N % n_bins`` runs one larger (``numpy.array_split``), so ties at a
    cut may fall on both sides.
    """
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1; received {n_bins!r}")
    n = confidence.numel()
    order = torch.sort(confidence.reshape(-1).double(), stable=True)
    conf = order.values
    hit = correct.reshape(-1).double()[order.indices]
    sizes = [n // n_bins + (1 if i < n % n_bins else 0) for i in range(n_bins)]
    index = torch.repeat_interleave(torch.arange(n_bins, device=conf.device), torch.tensor(sizes, device=conf.device))
    count = torch.zeros(n_bins, dtype=torch.float64, device=conf.device)
    count.index_add_(0, index, torch.ones_like(conf))
    return count, torch.zeros_like(count).index_add_(0, index, conf), torch.zeros_like(count).index_add_(0, index, hit)


def adaptive_ece(preds: Tensor, target: Tensor, *, n_bins: int = 15, from_logits: bool = True,
                 ignore_index: int | None = None) -> Tensor:
    """Adaptive (equal-mass) ECE: ``sum_b (n_b / N) |acc_b - conf_b|`` over bins of equal count.

    Equal-width bins leave nearly every prediction of a confident model in the last bin;
    equal-mass bins (Nixon et al., CVPR-W 2019) spread them evenly. Scores are logits by default,
    as for every metric here (``from_logits=False``: probabilities in ``[0, 1]``).
    """
    _, probs, target = flatten_scores(preds, target, from_logits=from_logits, ignore_index=ignore_index)
    return _ece_from_bins(*adaptive_calibration_bins(*_top1(probs, target), n_bins=n_bins))


def confidence_gap(preds: Tensor, target: Tensor, *, from_logits: bool = True,
                   ignore_index: int | None = None) -> Tensor:
    """Mean top-1 confidence minus accuracy: > 0 overconfident, < 0 underconfident (the ECE's direction).

    It is the signed ECE with a single bin, and also ``sum_b (n_b / N) (conf_b - acc_b)`` for any binning.
    """
    _, probs, target = flatten_scores(preds, target, from_logits=from_logits, ignore_index=ignore_index)
    confidence, correct = _top1(probs, target)
    return (confidence.double() - correct.double()).mean().float() if target.numel() else torch.tensor(0.0)


def calibration_curve(preds: Tensor, target: Tensor, *, n_bins: int = 15, equal_mass: bool = False,
                      from_logits: bool = True, ignore_index: int | None = None) -> dict[str, Tensor]:
    """Per-bin ``count``, mean ``confidence`` and ``accuracy`` (NaN when empty) and ``edges``, for a plot.

    ``equal_mass``: the bins of :func:`adaptive_ece` (``edges`` are the lowest confidence of each bin
    and the highest of the last); else the equal-width bins of :func:`expected_calibration_error`.
    """
    _, probs, target = flatten_scores(preds, target, from_logits=from_logits, ignore_index=ignore_index)
    confidence, correct = _top1(probs, target)
    if equal_mass:
        count, conf, acc = adaptive_calibration_bins(confidence, correct, n_bins=n_bins)
        ordered = torch.sort(confidence.double()).values
        starts = torch.cumsum(count, 0).long() - count.long()
        edges = torch.cat([ordered[starts.clamp(max=max(len(ordered) - 1, 0))], ordered[-1:]]) if len(ordered) \
            else torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    else:
        count, conf, acc = calibration_bins(probs, target, n_bins=n_bins)
        edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    return _bin_means(count, conf, acc, edges)


def _bin_means(count: Tensor, conf: Tensor, acc: Tensor, edges: Tensor) -> dict[str, Tensor]:
    safe, empty = count.clamp_min(1), count == 0
    return {"count": count.clone(), "confidence": (conf / safe).masked_fill(empty, float("nan")),
            "accuracy": (acc / safe).masked_fill(empty, float("nan")), "edges": edges.double().cpu()}


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


class ConfidenceGap(_MeanScoreMetric):
    """Mean top-1 confidence minus accuracy (:func:`confidence_gap`): the direction of the ECE.

    Above 0: overconfident; below 0: underconfident (mixed models, Wang et al., CVPR 2023). No
    better direction: 0 is calibrated on average.
    """

    higher_is_better = None

    def _values(self, log_probs: Tensor, probs: Tensor, target: Tensor) -> Tensor:
        confidence, correct = _top1(probs, target)
        return confidence - correct


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
        return _bin_means(self.bin_count, self.bin_conf, self.bin_acc,
                          torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64))


class AdaptiveCalibrationError(_ScoreMetric):
    """Adaptive (equal-mass) ECE as a torchmetrics metric (:func:`adaptive_ece`).

    Equal-mass bins need every confidence, so the states are concatenated (two floats per
    counted position, gathered across processes). Bound for dense outputs: with
    ``max_per_update`` set, each update keeps a seeded random subsample of that many positions.

    Args:
        n_bins: Equal-mass bins.
        from_logits: Scores are logits (else probabilities in ``[0, 1]``).
        ignore_index: Target value left out.
        max_per_update: Most positions kept per update (``None``: all).
        seed: Seed of the subsample.
    """

    higher_is_better = False

    def __init__(self, *, n_bins: int = 15, max_per_update: int | None = None, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
            raise ValueError(f"n_bins must be an int >= 1; received {n_bins!r}")
        self.n_bins, self.max_per_update = n_bins, max_per_update
        self._generator = torch.Generator().manual_seed(seed)
        self.add_state("confidence", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch."""
        _, probs, target = self._flatten(preds.detach(), target)
        confidence, correct = _top1(probs, target)
        if self.max_per_update is not None and confidence.numel() > self.max_per_update:
            keep = torch.randperm(confidence.numel(), generator=self._generator)[: self.max_per_update]
            keep = keep.to(confidence.device)
            confidence, correct = confidence[keep], correct[keep]
        self.confidence.append(confidence)
        self.correct.append(correct)

    def compute(self) -> Tensor:
        """The adaptive ECE so far (0 when empty)."""
        conf = self.confidence if isinstance(self.confidence, Tensor) else (
            torch.cat(self.confidence) if self.confidence else torch.zeros(0))
        hit = self.correct if isinstance(self.correct, Tensor) else (
            torch.cat(self.correct) if self.correct else torch.zeros(0))
        return _ece_from_bins(*adaptive_calibration_bins(conf, hit, n_bins=self.n_bins))


def classification_metrics(*, from_logits: bool = True, ignore_index: int | None = None,
                           n_bins: int = 15) -> MetricCollection:
    """``acc``, ``nll``, ``ece``, ``conf_gap`` (the ECE's direction) and ``brier`` for ``(N, C)`` or dense scores."""
    options = {"from_logits": from_logits, "ignore_index": ignore_index}
    return MetricCollection({
        "acc": Accuracy(**options),
        "nll": NegativeLogLikelihood(**options),
        "ece": ExpectedCalibrationError(n_bins=n_bins, **options),
        "conf_gap": ConfidenceGap(**options),
        "brier": BrierScore(**options),
    }, compute_groups=False)
