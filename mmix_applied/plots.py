"""Reliability diagrams (accuracy against confidence per bin), drawn with matplotlib's Agg backend.

Calibration is where Manifold Mixup shines (Verma et al., ICML 2019): a calibrated model's bars
follow the diagonal.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmix_applied._io import atomic_write_bytes

__all__ = ["reliability_diagram"]


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def reliability_diagram(bins: dict[str, Any], path: str | os.PathLike, *, title: str = "Reliability diagram",
                        ece: float | None = None) -> Path:
    """Draw a reliability diagram and save it (PNG/SVG/PDF by suffix), atomically.

    Args:
        bins: ``ExpectedCalibrationError.bins()``: ``count``, ``confidence``, ``accuracy``, ``edges``.
        path: Output image file.
        title: Figure title.
        ece: ECE to print in the legend (computed from ``bins`` if omitted).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    for key in ("count", "confidence", "accuracy", "edges"):
        if key not in bins:
            raise KeyError(f"bins needs keys count, confidence, accuracy, edges; missing {key!r}")
    count, conf, acc, edges = (_as_numpy(bins[k]) for k in ("count", "confidence", "accuracy", "edges"))
    if ece is None:
        total = count.sum()
        ok = count > 0
        ece = float((np.abs(acc[ok] - conf[ok]) * count[ok]).sum() / total) if total else 0.0
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1:] - edges[:-1]
    fig = Figure(figsize=(4.5, 5.5))
    ax, ax_hist = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ok = count > 0
    ax.bar(centers[ok], acc[ok], width=width[ok], edgecolor="black", color="tab:blue", label="accuracy")
    ax.bar(centers[ok], conf[ok] - acc[ok], bottom=acc[ok], width=width[ok], color="tab:red", alpha=0.3,
           edgecolor="tab:red", label="gap")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title}\nECE = {ece:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.bar(centers, count / max(count.sum(), 1), width=width, color="gray", edgecolor="black")
    ax_hist.set(xlabel="confidence", ylabel="fraction")
    fig.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())
