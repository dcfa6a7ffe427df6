"""Figures, drawn with matplotlib's Agg backend and written atomically through one helper.

Every figure the library writes goes through :func:`save_figure` (a temporary file and a
rename, so a kill never leaves half an image): the per-run reliability diagram (calibration is
where Manifold Mixup shines, Verma et al., ICML 2019: a calibrated model's bars follow the
diagonal), the comparison's validation curves, reliability curves and metric bars, and the
class-conditional spectra.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmix_applied.reports.comparison import mean_std, metric_values, read_metrics_csv, short_name, variants_in_order
from mmix_applied.utils.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from mmix_applied.metrics.spectrum import ClassSpectra

__all__ = ["calibration_direction", "confusion_matrix_figure", "new_figure", "plot_metric_bars",
           "plot_pooled_reliability", "plot_reliability", "plot_spectra", "plot_validation_curves",
           "reliability_diagram", "reliability_figure", "save_figure"]

_COLORS = {"none": "tab:gray", "input": "tab:blue", "manifold": "tab:red"}


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` on the Agg backend (no display, no pyplot state); ``kwargs`` go to ``Figure``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Lay out ``fig`` and write it to ``path`` (PNG/SVG/PDF by suffix) atomically; parent folders are made.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _signed_gap(count: np.ndarray, conf: np.ndarray, acc: np.ndarray) -> float:
    ok = count > 0
    total = count[ok].sum()
    return float(((conf[ok] - acc[ok]) * count[ok]).sum() / total) if total else 0.0


def calibration_direction(gap: float) -> str:
    """``"overconfident"`` (mean confidence above accuracy), ``"underconfident"`` or ``"calibrated"`` (0)."""
    return "overconfident" if gap > 0 else "underconfident" if gap < 0 else "calibrated"


def reliability_figure(bins: Mapping[str, Any], *, title: str = "Reliability diagram", ece: float | None = None) -> Any:
    """A reliability diagram: accuracy bars, the gap to the confidence, and a histogram of the bins.

    The gap bar of each bin spans from the lower of accuracy and mean confidence to the higher
    (height ``|conf - acc|``, as torch-uncertainty draws it), red where the bin is overconfident
    (confidence above accuracy) and orange where it is underconfident; the title gives the ECE and
    the overall direction (mean confidence minus accuracy).

    Args:
        bins: ``ExpectedCalibrationError.bins()``: ``count``, ``confidence``, ``accuracy``, ``edges``.
        title: Figure title.
        ece: ECE to print (computed from ``bins`` if omitted).

    Returns:
        The matplotlib ``Figure``.
    """
    for key in ("count", "confidence", "accuracy", "edges"):
        if key not in bins:
            raise KeyError(f"bins needs keys count, confidence, accuracy, edges; missing {key!r}")
    count, conf, acc, edges = (_as_numpy(bins[k]) for k in ("count", "confidence", "accuracy", "edges"))
    ok = count > 0
    if ece is None:
        total = count.sum()
        ece = float((np.abs(acc[ok] - conf[ok]) * count[ok]).sum() / total) if total else 0.0
    gap = _signed_gap(count, conf, acc)
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1:] - edges[:-1]
    fig = new_figure(figsize=(5.0, 5.8))
    ax, ax_hist = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    low, height = np.minimum(acc, conf), np.abs(conf - acc)
    ax.bar(centers[ok], low[ok], width=width[ok], edgecolor="black", color="tab:blue", alpha=0.7,
           label="below accuracy and confidence")
    for side, color, label in ((conf > acc, "tab:red", "gap: overconfident (confidence > accuracy)"),
                               (acc > conf, "tab:orange", "gap: underconfident (accuracy > confidence)")):
        keep = ok & side
        if keep.any():
            ax.bar(centers[keep], height[keep], bottom=low[keep], width=width[keep], color=color, alpha=0.5,
                   edgecolor=color, hatch="//", label=label)
    ax.hlines(acc[ok], edges[:-1][ok], edges[1:][ok], colors="black", linewidth=2, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    direction = calibration_direction(gap)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
           title=f"{title}\nECE {ece:.4f}, {direction} (conf − acc {gap:+.4f})")
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=7)
    ax_hist.bar(centers, count / max(count.sum(), 1), width=width, color="gray", edgecolor="black")
    ax_hist.set(xlabel="confidence", ylabel="fraction")
    return fig


def reliability_diagram(bins: Mapping[str, Any], path: str | os.PathLike, *, title: str = "Reliability diagram",
                        ece: float | None = None) -> Path:
    """Draw :func:`reliability_figure` and save it (PNG/SVG/PDF by suffix), atomically.

    Returns:
        The path written.
    """
    return save_figure(reliability_figure(bins, title=title, ece=ece), path)


def plot_validation_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                           title: str = "Validation curves") -> Path | None:
    """One panel per ``val/`` metric, one line per run coloured by variant (from ``logs/metrics.csv``)."""
    runs = []
    for r in rows:
        log = Path(r["run_dir"]) / "logs" / "metrics.csv"
        if log.is_file():
            runs.append((r["variant"], int(r["seed"]), read_metrics_csv(log)))
    keys = sorted({k for _, _, curves in runs for k in curves})
    if not keys:
        return None
    cols = min(3, len(keys))
    fig = new_figure(figsize=(4 * cols, 3 * math.ceil(len(keys) / cols)))
    axes = np.atleast_1d(fig.subplots(math.ceil(len(keys) / cols), cols)).reshape(-1)
    for ax, key in zip(axes, keys):
        labelled = set()
        for variant, _seed, curves in runs:
            if key in curves:
                epochs, values = zip(*curves[key])
                ax.plot(epochs, values, marker=".", color=_COLORS.get(variant), alpha=0.8,
                        label=variant if variant not in labelled else None)
                labelled.add(variant)
        ax.set(title=key, xlabel="epoch")
        ax.legend(fontsize=7)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_reliability(bins_by_variant: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike, *,
                     title: str = "Reliability") -> Path:
    """Overlaid reliability curves: ``{variant: {"raw": bins, "scaled": bins}}``, one panel per kind.

    ``bins`` as :meth:`mmix_applied.metrics.ExpectedCalibrationError.bins` returns them (per-bin
    ``confidence``, ``accuracy``, ``count``); empty bins are skipped.
    """
    kinds = [k for k in ("raw", "scaled") if any(k in b for b in bins_by_variant.values())]
    if not kinds:
        raise ValueError("plot_reliability needs bins under 'raw' or 'scaled'; received none")
    fig = new_figure(figsize=(4.5 * len(kinds), 4.5))
    axes = np.atleast_1d(fig.subplots(1, len(kinds))).reshape(-1)
    for ax, kind in zip(axes, kinds):
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        for variant, by_kind in bins_by_variant.items():
            if kind not in by_kind:
                continue
            b = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)
                 for k, v in by_kind[kind].items()}
            ok = b["count"] > 0
            ax.plot(b["confidence"][ok], b["accuracy"][ok], marker="o", color=_COLORS.get(variant), label=variant)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{title} ({kind})")
        ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)


_SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_pooled_reliability(curves: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | os.PathLike, *,
                            title: str = "Reliability", notes: Mapping[str, str] | None = None) -> Path:
    """Reliability curves pooled over seeds, one panel per kind (``raw``, ``scaled``), seeds told apart.

    ``curves[variant][kind]`` holds ``pooled`` (bins of every seed's predictions together, drawn as a
    line with binomial error bars ``sqrt(acc (1 - acc) / n)``) and ``per_seed`` (``{seed: bins}``,
    drawn as small markers, one shape per seed, in the variant's colour); bins as
    :func:`mmix_applied.metrics.calibration_curve` returns them. ``notes[kind]`` is printed under
    the panel (the binning, a temperature at its bound).
    """
    kinds = [k for k in ("raw", "scaled") if any(k in c for c in curves.values())]
    if not kinds:
        raise ValueError("plot_pooled_reliability needs curves under 'raw' or 'scaled'; received none")
    fig = new_figure(figsize=(5.0 * len(kinds), 5.2))
    axes = np.atleast_1d(fig.subplots(1, len(kinds))).reshape(-1)
    seeds = sorted({int(s) for c in curves.values() for k in kinds for s in (c.get(k) or {}).get("per_seed", {})})
    marker = {s: _SEED_MARKERS[i % len(_SEED_MARKERS)] for i, s in enumerate(seeds)}
    for ax, kind in zip(axes, kinds):
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        for variant, by_kind in curves.items():
            if kind not in by_kind:
                continue
            color = _COLORS.get(variant)
            b = {k: _as_numpy(v) for k, v in by_kind[kind]["pooled"].items()}
            ok = b["count"] > 0
            err = np.sqrt(b["accuracy"][ok] * (1 - b["accuracy"][ok]) / b["count"][ok])
            ax.errorbar(b["confidence"][ok], b["accuracy"][ok], yerr=err, marker="o", color=color, capsize=2,
                        linewidth=1.8, label=f"{variant} (pooled, n = {int(b['count'].sum())})")
            for seed, bins in sorted((by_kind[kind].get("per_seed") or {}).items()):
                s = {k: _as_numpy(v) for k, v in bins.items()}
                keep = s["count"] > 0
                ax.scatter(s["confidence"][keep], s["accuracy"][keep], marker=marker[int(seed)], s=18, alpha=0.5,
                           color=color, linewidths=0)
        for seed in seeds:
            ax.scatter([], [], marker=marker[seed], color="gray", s=18, label=f"seed {seed}")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{title} ({kind})")
        ax.legend(fontsize=7, loc="upper left")
        if notes and notes.get(kind):
            ax.text(0.98, 0.02, notes[kind], transform=ax.transAxes, ha="right", va="bottom", fontsize=7, wrap=True)
    return save_figure(fig, path)


def confusion_matrix_figure(matrix: Any, class_names: Sequence[str], *, title: str = "Confusion matrix") -> Any:
    """Counts (rows: true class, columns: predicted), each row's share as the shade.

    Returns:
        The matplotlib ``Figure``.
    """
    counts = _as_numpy(matrix)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {n} class names; they must agree")
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * n + 2.0)
    fig = new_figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), list(class_names), fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def plot_metric_bars(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], path: str | os.PathLike, *,
                     title: str) -> Path | None:
    """Grouped bars of ``keys`` (mean ± std over seeds), one bar per variant (per-class Dice, CER/WER)."""
    variants = variants_in_order(rows)
    values = [(r["variant"], metric_values(r)) for r in rows]
    stats = {v: {k: mean_std([m[k] for variant, m in values if variant == v and k in m] or [np.nan]) for k in keys}
             for v in variants}
    if not keys:
        return None
    fig = new_figure(figsize=(max(4.0, 1.2 * len(keys) * max(1, len(variants)) / 2), 3.5))
    ax = fig.subplots()
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(keys))
    for i, v in enumerate(variants):
        means = [stats[v][k][0] for k in keys]
        stds = [0.0 if math.isnan(stats[v][k][1]) else stats[v][k][1] for k in keys]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, color=_COLORS.get(v), label=v, capsize=3)
    ax.set_xticks(x, [short_name(k) for k in keys], rotation=30, ha="right", fontsize=8)
    ax.set(title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_spectra(runs: Mapping[str, ClassSpectra], path: str | os.PathLike | None = None, *,
                 title: str = "Class-conditional spectra", max_index: int | None = 64) -> Any:
    """Overlay the runs' spectra: the class-mean fraction of variance per singular direction.

    Each run is one line (the mean over classes of ``s_i^2 / sum s^2``, log scale) and its
    legend gives the mean directions holding ``variance``. Saved to ``path`` (PNG/SVG/PDF by
    suffix) when given.

    Returns:
        The matplotlib ``Figure``.
    """
    if not runs:
        raise ValueError("plot_spectra needs at least one run; received none")
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, spectra in runs.items():
        length = max(len(s) for s in spectra.singular_values.values())
        curve = torch.zeros(length, dtype=torch.float64)
        for s in spectra.singular_values.values():
            energy = s ** 2 / (s ** 2).sum()
            curve[: len(s)] += energy
        curve /= len(spectra.singular_values)
        if max_index is not None:
            curve = curve[:max_index]
        ax.semilogy(range(1, len(curve) + 1), curve.clamp_min(1e-12).numpy(), marker=".",
                    label=f"{label} ({spectra.mean_directions:.1f} dirs for {spectra.variance:.0%})")
    ax.set(xlabel="singular direction", ylabel="fraction of class variance", title=title)
    ax.legend(fontsize=8)
    if path is not None:
        save_figure(fig, path)
    return fig
