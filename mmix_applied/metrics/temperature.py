"""Temperature scaling: fit one temperature on held-out logits, scale logits by it.

Mixed models come out underconfident: every training target is soft (Verma et al., ICML 2019;
Thulasidasan et al., NeurIPS 2019; Wang et al., CVPR 2023), so raw NLL and ECE understate what
mixing bought. One temperature ``T`` fitted on held-out data (Guo et al., ICML 2017: minimise the
NLL of ``logits / T`` over ``log T``) puts the likelihood back on a fair footing without changing
any prediction: argmax, accuracy, Dice and CER are the same for every ``T > 0``.

Pure, Lightning-free functions do the math (:func:`fit_temperature`, :func:`temperature_fit`); a
thin stateful class wraps them (:class:`TemperatureScaler`). A fit the data cannot support (too
few, all-correct or tied validation predictions; an optimum on a bound) says so
(:attr:`TemperatureFit.degenerate`), so the engine can fall back to ``T = 1``. The calibration
metrics (ECE, adaptive ECE) are in :mod:`mmix_applied.metrics.calibration`.
Inputs follow :mod:`mmix_applied.metrics`: class logits ``(N, C)`` or dense ``(B, C, *S)`` with
class-index targets ``(N,)`` / ``(B, *S)``; ``C == 1`` is a binary sigmoid output; with
``multilabel=True`` logits and 0/1 targets have the same shape and every element is a sigmoid.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from mmix_applied.errors import MmixWarning

__all__ = [
    "DEFAULT_BOUNDS",
    "CalibrationWarning",
    "TemperatureFit",
    "TemperatureScaler",
    "at_bound",
    "fit_temperature",
    "scaled_nll",
    "temperature_fit",
]

#: The temperatures a fit may return, unless told otherwise.
DEFAULT_BOUNDS = (0.05, 20.0)

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


@dataclasses.dataclass(frozen=True)
class TemperatureFit:
    """What :func:`temperature_fit` found.

    Attributes:
        temperature: The fitted temperature (1.0 when the data cannot fix one; clamped to the bounds).
        case: The degenerate case the data shows (``"all-correct validation data ..."``), or ``None``.
        at_bound: The optimum lies on (or beyond) a bound: ``temperature`` is that bound.
        bounds: The bounds searched.
        message: The warning :func:`fit_temperature` gives (``None``: a clean fit).
    """

    temperature: float
    case: str | None = None
    at_bound: bool = False
    bounds: tuple[float, float] = DEFAULT_BOUNDS
    message: str | None = None

    @property
    def degenerate(self) -> bool:
        """Whether the data failed to fix a temperature inside the bounds (a case, or a bound)."""
        return self.case is not None or self.at_bound

    @property
    def reason(self) -> str | None:
        """One phrase saying why the fit is degenerate (``None`` when it is not)."""
        if not self.degenerate:
            return None
        where = f"T at its bound {self.temperature:.4g} (bounds {self.bounds[0]:g}..{self.bounds[1]:g})"
        if self.case is None:
            return where
        return f"{self.case}; {where}" if self.at_bound else self.case


def at_bound(temperature: float, bounds: tuple[float, float] = DEFAULT_BOUNDS) -> bool:
    """Whether ``temperature`` sits on one of ``bounds`` (to 0.1 % in ``log T``), as a degenerate fit leaves it."""
    t = float(temperature)
    return t > 0 and min(abs(math.log(t) - math.log(b)) for b in bounds) < 1e-3


def temperature_fit(logits: Tensor, targets: Tensor, *, ignore_index: int | None = None, multilabel: bool = False,
                    bounds: tuple[float, float] = DEFAULT_BOUNDS, max_iter: int = 100,
                    tol: float = 1e-7) -> TemperatureFit:
    """:func:`fit_temperature` without the warning: the temperature and whether the data could fix it."""
    lo, hi = _check_bounds(bounds)
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1; received {max_iter!r}")
    kind, z, y = _pairs(logits, targets, ignore_index=ignore_index, multilabel=multilabel)
    if y.numel() == 0:
        case = "empty input (no counted samples or positions)"
        return TemperatureFit(1.0, case, False, (lo, hi), f"fit_temperature: {case}; temperature left at 1.0")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits hold NaN or Inf values; a temperature cannot be fitted to them")
    fatal, notice = _degenerate(kind, z, y)
    if fatal is not None:
        return TemperatureFit(1.0, fatal, False, (lo, hi),
                              f"fit_temperature: {fatal}: the NLL does not depend on T; temperature left at 1.0")
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
    bounded = min(abs(best - math.log(lo)), abs(best - math.log(hi))) < 1e-3
    message = None
    if notice is not None or bounded:
        where = f"bounded at {t:.4g} (bounds {lo:g}..{hi:g})" if bounded else f"fitted T = {t:.4g}"
        message = (f"fit_temperature: {notice or 'the optimum lies outside the bounds'}; {where}. Check the "
                   "validation split (size, labels) before trusting the calibrated figures")
    return TemperatureFit(t, notice, bounded, (lo, hi), message)


def fit_temperature(logits: Tensor, targets: Tensor, *, ignore_index: int | None = None, multilabel: bool = False,
                    bounds: tuple[float, float] = DEFAULT_BOUNDS, max_iter: int = 100, tol: float = 1e-7) -> float:
    """The temperature ``T`` in ``bounds`` minimising the NLL of ``logits / T`` (Guo et al. 2017).

    The search runs over ``u = log T`` by golden-section search: the NLL is convex in ``1 / T`` and
    so unimodal in ``log T``, the search needs no gradient or learning rate, and it stays inside
    the bounds. Computed in float64 on the logits' device. :func:`temperature_fit` returns the
    same temperature with the degenerate case named, without warning.

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
    found = temperature_fit(logits, targets, ignore_index=ignore_index, multilabel=multilabel, bounds=bounds,
                            max_iter=max_iter, tol=tol)
    if found.message is not None:
        warnings.warn(found.message, CalibrationWarning, stacklevel=2)
    return found.temperature


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
                 bounds: tuple[float, float] = DEFAULT_BOUNDS, max_per_update: int = 65536, seed: int = 0) -> None:
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
        #: What the last :meth:`fit` found (``None`` before one).
        self.last_fit: TemperatureFit | None = None

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
        """Fit the temperature on what :meth:`update` kept; store and return it (:attr:`last_fit` says how)."""
        if not self._y:
            message = "TemperatureScaler.fit: no batches were added; temperature left at 1.0"
            self.last_fit = TemperatureFit(1.0, "no batches were added", False, self.bounds, message)
        else:
            z, y = torch.cat(self._z), torch.cat(self._y)
            sigmoid = self._kind == "sigmoid"
            self.last_fit = temperature_fit(z, y.double() if sigmoid else y, multilabel=sigmoid, bounds=self.bounds)
        if self.last_fit.message is not None:
            warnings.warn(self.last_fit.message, CalibrationWarning, stacklevel=2)
        self.temperature.fill_(self.last_fit.temperature)
        return self.last_fit.temperature

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
