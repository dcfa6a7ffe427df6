"""Temperature scaling and the adaptive (equal-mass) expected calibration error.

Mixed models come out underconfident: every training target is soft (Verma et al., ICML 2019;
Thulasidasan et al., NeurIPS 2019; Wang et al., CVPR 2023), so raw NLL and ECE understate what
mixing bought. One temperature ``T`` fitted on held-out data (Guo et al., ICML 2017: minimise the
NLL of ``logits / T`` over ``log T``) puts the likelihood back on a fair footing without changing
any prediction: argmax, accuracy, Dice and CER are the same for every ``T > 0``.

Pure, Lightning-free functions do the math (:func:`fit_temperature`, :func:`adaptive_ece`); thin
stateful classes wrap them (:class:`TemperatureScaler`, :class:`AdaptiveCalibrationError`).
Inputs follow :mod:`mmix_applied.metrics`: class logits ``(N, C)`` or dense ``(B, C, *S)`` with
class-index targets ``(N,)`` / ``(B, *S)``; ``C == 1`` is a binary sigmoid output; with
``multilabel=True`` logits and 0/1 targets have the same shape and every element is a sigmoid.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from mmix_applied.errors import MmixWarning
from mmix_applied.metrics import flatten_scores

__all__ = [
    "AdaptiveCalibrationError",
    "CalibrationWarning",
    "TemperatureScaler",
    "adaptive_calibration_bins",
    "adaptive_ece",
    "fit_temperature",
    "scaled_nll",
]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class CalibrationWarning(MmixWarning):
    """A temperature fit on degenerate data (its message names the case and the bound used)."""


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = float(bounds[0]), float(bounds[1])
    except (TypeError, ValueError, IndexError):
        raise TypeError(f"bounds must be two numbers (lo, hi); received {bounds!r}. Typical: (0.05, 20.0)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < 1 < hi):
        raise ValueError(f"bounds must satisfy 0 < lo < 1 < hi, finite; received {bounds!r}. Typical: (0.05, 20.0)")
    return lo, hi


def _pairs(logits: Tensor, targets: Tensor, *, ignore_index: int | None,
           multilabel: bool) -> tuple[str, Tensor, Tensor]:
    """Flatten to ``("softmax", z (M, C), y (M,))`` or ``("sigmoid", z (M,), y (M,) float 0/1)``."""
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"logits and targets must be tensors; received {type(logits).__name__} and "
                        f"{type(targets).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point; received dtype {logits.dtype}")
    if multilabel:
        if tuple(targets.shape) != tuple(logits.shape):
            raise ValueError(f"multilabel=True needs targets of the logits' shape {tuple(logits.shape)}; received "
                             f"{tuple(targets.shape)}")
        z, y = logits.detach().reshape(-1), targets.detach().reshape(-1)
        if ignore_index is not None:
            keep = y != ignore_index
            z, y = z[keep], y[keep]
        if y.numel() and not bool(((y == 0) | (y == 1)).all()):
            bad = y[(y != 0) & (y != 1)][0].item()
            raise ValueError(f"multilabel targets must be 0 or 1 (or ignore_index); received {bad}")
        return "sigmoid", z.double(), y.double()
    if logits.dim() < 2:
        raise ValueError(f"logits must be (N, C) or (B, C, *spatial); received shape {tuple(logits.shape)}. "
                         "For one binary logit per sample use shape (N, 1)")
    if targets.is_floating_point():
        raise TypeError(f"targets must hold integer class indices (or pass multilabel=True for 0/1 targets of "
                        f"the logits' shape); received dtype {targets.dtype}")
    c = logits.shape[1]
    z = logits.detach().movedim(1, -1).reshape(-1, c) if logits.dim() > 2 else logits.detach()
    y = targets.detach().reshape(-1).long()
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"{z.shape[0]} logit rows (samples x positions) but {y.shape[0]} targets; targets must be "
                         f"(N,) for (N, C) logits or (B, *S) for (B, C, *S)")
    if ignore_index is not None:
        keep = y != ignore_index
        z, y = z[keep], y[keep]
    valid = 2 if c == 1 else c
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= valid):
        bad = y[(y < 0) | (y >= valid)][0].item()
        raise ValueError(f"target value {bad} is outside [0, {valid}); set ignore_index for void labels")
    if c == 1:
        return "sigmoid", z[:, 0].double(), y.double()
    return "softmax", z.double(), y


def _nll(kind: str, z: Tensor, y: Tensor, inv_t: float) -> float:
    if kind == "sigmoid":
        return float(F.softplus((1.0 - 2.0 * y) * z * inv_t).mean())
    return float(F.cross_entropy(z * inv_t, y))


def scaled_nll(logits: Tensor, targets: Tensor, temperature: float, *, ignore_index: int | None = None,
               multilabel: bool = False) -> float:
    """Mean NLL of ``logits / temperature`` over the counted samples (and positions)."""
    kind, z, y = _pairs(logits, targets, ignore_index=ignore_index, multilabel=multilabel)
    if y.numel() == 0:
        raise ValueError("no counted samples (empty input, or every target equals ignore_index)")
    return _nll(kind, z, y, 1.0 / float(temperature))


def _degenerate(kind: str, z: Tensor, y: Tensor) -> tuple[str | None, str | None]:
    """``(case that makes T meaningless, case that only deserves a warning)``."""
    if kind == "sigmoid":
        if bool((z == 0).all()):
            return "constant logits (all zero)", None
        correct = (z > 0) == (y > 0.5)
        tied = bool((z == 0).any())
        single = None
    else:
        spread = z.max(1).values - z.min(1).values
        if bool((spread == 0).all()):
            return "tied logits (every row constant)", None
        top = z.max(1, keepdim=True).values
        tied = bool(((z == top).sum(1) > 1).any())
        correct = z.gather(1, y[:, None])[:, 0] == top[:, 0]
        classes = torch.unique(y)
        single = f"a single class ({int(classes[0])}) in the targets" if classes.numel() == 1 else None
    if bool(correct.all()) and not tied:
        return None, "all-correct validation data (NLL falls as T -> 0)"
    if not bool(correct.any()):
        return None, "all-wrong validation data"
    return None, single


def fit_temperature(logits: Tensor, targets: Tensor, *, ignore_index: int | None = None, multilabel: bool = False,
                    bounds: tuple[float, float] = (0.05, 20.0), max_iter: int = 100, tol: float = 1e-7) -> float:
    """The temperature ``T`` in ``bounds`` minimising the NLL of ``logits / T`` (Guo et al. 2017).

    The search runs over ``u = log T`` by golden-section search: the NLL is convex in ``1 / T`` and
    so unimodal in ``log T``, the search needs no gradient or learning rate, and it stays inside
    the bounds. Computed in float64 on the logits' device.

    Args:
        logits: ``(N, C)`` class logits, dense ``(B, C, *S)`` logits, or (``multilabel``) any shape.
        targets: ``(N,)`` / ``(B, *S)`` class indices (``C == 1``: 0/1), or 0/1 of the logits' shape.
        ignore_index: Target value left out (void pixels).
        multilabel: Every logit is an independent sigmoid with a 0/1 target of the same shape.
        bounds: ``(lo, hi)`` with ``0 < lo < 1 < hi``.
        max_iter: Golden-section steps (each shrinks the interval by 0.618).
        tol: Stop when the ``log T`` interval is narrower than this.

    Returns:
        The temperature (divide the logits by it). 1.0 when the data cannot fix one.

    Warns:
        CalibrationWarning: Empty input, tied/constant logits (T left at 1.0), all-correct or
            all-wrong data, a single target class, or an optimum on a bound (T clamped there).
    """
    lo, hi = _check_bounds(bounds)
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1; received {max_iter!r}")
    kind, z, y = _pairs(logits, targets, ignore_index=ignore_index, multilabel=multilabel)
    if y.numel() == 0:
        warnings.warn("fit_temperature: empty input (no counted samples or positions); temperature left at 1.0",
                      CalibrationWarning, stacklevel=2)
        return 1.0
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits hold NaN or Inf values; a temperature cannot be fitted to them")
    fatal, notice = _degenerate(kind, z, y)
    if fatal is not None:
        warnings.warn(f"fit_temperature: {fatal}: the NLL does not depend on T; temperature left at 1.0",
                      CalibrationWarning, stacklevel=2)
        return 1.0
    a, b = math.log(lo), math.log(hi)
    f = {}

    def nll(u: float) -> float:
        if u not in f:
            f[u] = _nll(kind, z, y, math.exp(-u))
        return f[u]

    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    for _ in range(max_iter):
        if b - a < tol:
            break
        if nll(c) <= nll(d):
            b, d = d, c
            c = b - _GOLDEN * (b - a)
        else:
            a, c = c, d
            d = a + _GOLDEN * (b - a)
    best = min([(nll(u), u) for u in ((a + b) / 2, math.log(lo), math.log(hi))])[1]
    t = min(max(math.exp(best), lo), hi)
    at_bound = min(abs(best - math.log(lo)), abs(best - math.log(hi))) < 1e-3
    if notice is not None or at_bound:
        where = f"bounded at {t:.4g} (bounds {lo:g}..{hi:g})" if at_bound else f"fitted T = {t:.4g}"
        case = notice or "the optimum lies outside the bounds"
        warnings.warn(f"fit_temperature: {case}; {where}. Check the validation split (size, labels) before "
                      "trusting the calibrated figures", CalibrationWarning, stacklevel=2)
    return t


class TemperatureScaler(torch.nn.Module):
    """Accumulate held-out logits, fit one temperature, scale logits by it.

    Memory is bounded by a seeded random subsample: each :meth:`update` keeps at most
    ``max_per_update`` counted positions (void pixels are dropped first), so a dense batch of
    ``B x H x W`` pixels costs at most ``max_per_update * C`` floats on the CPU. A subsample, not a
    fixed grid of T values with streaming sums, because it keeps the fit exact and continuous (a
    grid limits T to its spacing) and the mean NLL of 65k random pixels per batch is already
    within sampling noise of the full mean. Classification batches are smaller than the cap and
    are kept whole.

    ``temperature`` is a buffer (in ``state_dict``, restored by ``load_state_dict``).

    Args:
        ignore_index: Target value left out.
        multilabel: Sigmoid per element, 0/1 targets of the logits' shape.
        bounds: Allowed temperatures.
        max_per_update: Most positions kept per :meth:`update`.
        seed: Seed of the subsample's generator.
    """

    def __init__(self, *, ignore_index: int | None = None, multilabel: bool = False,
                 bounds: tuple[float, float] = (0.05, 20.0), max_per_update: int = 65536, seed: int = 0) -> None:
        super().__init__()
        self.bounds = _check_bounds(bounds)
        if not isinstance(max_per_update, int) or max_per_update < 1:
            raise ValueError(f"max_per_update must be an int >= 1; received {max_per_update!r}")
        self.ignore_index, self.multilabel, self.max_per_update = ignore_index, multilabel, max_per_update
        self.register_buffer("temperature", torch.tensor(1.0, dtype=torch.float64))
        self._generator = torch.Generator().manual_seed(seed)
        self._kind: str | None = None
        self._z: list[Tensor] = []
        self._y: list[Tensor] = []

    def reset(self) -> None:
        """Drop the accumulated logits (the temperature stays)."""
        self._kind, self._z, self._y = None, [], []

    @torch.no_grad()
    def update(self, logits: Tensor, targets: Tensor) -> None:
        """Add a batch of held-out logits and targets (moved to the CPU, subsampled to the cap)."""
        kind, z, y = _pairs(logits, targets, ignore_index=self.ignore_index, multilabel=self.multilabel)
        if self._kind is not None and kind != self._kind:
            raise ValueError(f"update received {kind} logits after {self._kind} ones; one scaler per output type")
        if self._z and kind == "softmax" and z.shape[1] != self._z[0].shape[1]:
            raise ValueError(f"update received {z.shape[1]} classes after {self._z[0].shape[1]}")
        self._kind = kind
        if y.numel() > self.max_per_update:
            keep = torch.randperm(y.numel(), generator=self._generator)[: self.max_per_update].to(y.device)
            z, y = z[keep], y[keep]
        self._z.append(z.float().cpu())
        self._y.append(y.cpu())

    @property
    def num_positions(self) -> int:
        """Positions held for the fit."""
        return sum(int(y.numel()) for y in self._y)

    def fit(self) -> float:
        """Fit the temperature on what :meth:`update` kept; store and return it."""
        if not self._y:
            warnings.warn("TemperatureScaler.fit: no batches were added; temperature left at 1.0",
                          CalibrationWarning, stacklevel=2)
            t = 1.0
        else:
            z, y = torch.cat(self._z), torch.cat(self._y)
            if self._kind == "sigmoid":
                t = fit_temperature(z, y.double(), multilabel=True, bounds=self.bounds)
            else:
                t = fit_temperature(z, y, bounds=self.bounds)
        self.temperature.fill_(t)
        return t

    def nll(self, temperature: float | None = None) -> float:
        """Mean NLL of what :meth:`update` kept at ``temperature`` (default: the fitted one; 1.0 = raw)."""
        if not self._y:
            raise ValueError("TemperatureScaler.nll: no batches were added")
        t = float(self.temperature) if temperature is None else float(temperature)
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a positive finite number; received {temperature!r}")
        kind = self._kind or "softmax"
        y = torch.cat(self._y)
        return _nll(kind, torch.cat(self._z).double(), y.double() if kind == "sigmoid" else y, 1.0 / t)

    def scale(self, logits: Tensor) -> Tensor:
        """``logits / T`` (in the logits' dtype)."""
        return logits / self.temperature.to(logits.dtype)

    forward = scale

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4g}"


def adaptive_calibration_bins(confidence: Tensor, correct: Tensor, *,
                              n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin ``(count, sum of confidence, sum of correct)`` over equal-mass bins.

    Predictions are sorted by confidence (stable) and cut into ``n_bins`` runs whose sizes differ
    by at most one, the first ``N % n_bins`` runs one larger (``numpy.array_split``), so ties at a
    cut may fall on both sides.
    """
    if not isinstance(n_bins, int) or n_bins < 1:
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


def _ece(count: Tensor, conf: Tensor, acc: Tensor) -> Tensor:
    total = count.sum()
    if total == 0:
        return torch.tensor(0.0)
    ok = count > 0
    return ((acc[ok] / count[ok] - conf[ok] / count[ok]).abs() * count[ok] / total).sum().float()


def adaptive_ece(probs: Tensor, targets: Tensor, *, n_bins: int = 15, from_logits: bool = False,
                 ignore_index: int | None = None) -> Tensor:
    """Adaptive (equal-mass) ECE: ``sum_b (n_b / N) |acc_b - conf_b|`` over bins of equal count.

    The 15-bin ECE of :mod:`mmix_applied.metrics` uses equal-width bins, which for a confident
    model leave nearly every prediction in the last bin; equal-mass bins (Nixon et al., CVPR-W 2019)
    spread them evenly. Inputs as :func:`mmix_applied.metrics.flatten_scores` takes them
    (probabilities by default; ``C == 1`` is a binary output judged on the top label of ``[1-p, p]``).
    """
    _, p, y = flatten_scores(probs, targets, from_logits=from_logits, ignore_index=ignore_index)
    confidence, predicted = p.max(1)
    return _ece(*adaptive_calibration_bins(confidence, predicted == y, n_bins=n_bins))


class AdaptiveCalibrationError(Metric):
    """Adaptive (equal-mass) ECE as a torchmetrics metric.

    Equal-mass bins need every confidence, so the states are concatenated (two floats per
    counted position, gathered across processes). Bound for dense outputs: with
    ``max_per_update`` set, each update keeps a seeded random subsample of that many positions.

    Args:
        n_bins: Equal-mass bins.
        from_logits: Scores are logits (else probabilities).
        ignore_index: Target value left out.
        max_per_update: Most positions kept per update (``None``: all).
        seed: Seed of the subsample.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, n_bins: int = 15, from_logits: bool = True, ignore_index: int | None = None,
                 max_per_update: int | None = None, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(n_bins, int) or n_bins < 1:
            raise ValueError(f"n_bins must be an int >= 1; received {n_bins!r}")
        self.n_bins, self.from_logits, self.ignore_index = n_bins, from_logits, ignore_index
        self.max_per_update = max_per_update
        self._generator = torch.Generator().manual_seed(seed)
        self.add_state("confidence", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch."""
        _, p, y = flatten_scores(preds.detach(), target, from_logits=self.from_logits, ignore_index=self.ignore_index)
        confidence, predicted = p.max(1)
        correct = (predicted == y).to(confidence.dtype)
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
        return _ece(*adaptive_calibration_bins(conf, hit, n_bins=self.n_bins))
