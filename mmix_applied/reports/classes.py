"""Per-class figures of a classifier's test split: precision, recall and the confusion matrix (JSON + PNG).

A mean accuracy hides which classes a model confuses; the confusion matrix (rows: true class,
columns: predicted, as torchmetrics' ``MulticlassConfusionMatrix`` counts it) and the per-class
precision ``M[c, c] / sum_r M[r, c]`` and recall ``M[c, c] / sum_k M[c, k]`` show it. A class
never predicted (precision) or never present (recall) gets 0, as torchmetrics' default
``zero_division=0`` gives; ``support`` (its count in the truth) tells the two apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmix_applied.reports.figures import confusion_matrix_figure, save_figure
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["CONFUSION_FILE", "class_report", "metric_key", "write_class_report"]

#: File stem of the report inside the run directory (``.json`` and ``.png``).
CONFUSION_FILE = "confusion_matrix"


def metric_key(name: str) -> str:
    """A class name as it appears in a metric key (spaces become ``_``, as the Dice keys do)."""
    return str(name).replace(" ", "_")


def class_report(matrix: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """``{"classes", "matrix", "precision", "recall", "support"}`` (lists in class order) of a confusion matrix.

    Raises:
        ValueError: The matrix is not square with one row per class name.
    """
    counts = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=np.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {n} class names; received names "
                         f"{list(class_names)}")
    hits = np.diag(counts).astype(np.float64)
    predicted, support = counts.sum(0), counts.sum(1)
    return {"classes": [str(c) for c in class_names], "matrix": counts.tolist(),
            "precision": np.divide(hits, predicted, out=np.zeros(n), where=predicted > 0).tolist(),
            "recall": np.divide(hits, support, out=np.zeros(n), where=support > 0).tolist(),
            "support": support.tolist(), "rows": "true class", "columns": "predicted class"}


def write_class_report(matrix: Any, class_names: Sequence[str], out_dir: str | os.PathLike, *,
                       title: str = "Confusion matrix (test split)") -> dict[str, Any]:
    """Write ``confusion_matrix.json`` and ``confusion_matrix.png`` into ``out_dir`` (atomically); return the report."""
    report = class_report(matrix, class_names)
    out = Path(out_dir)
    atomic_write_text(out / f"{CONFUSION_FILE}.json", json.dumps(report, indent=2))
    figure = confusion_matrix_figure(report["matrix"], report["classes"], title=title)
    save_figure(figure, out / f"{CONFUSION_FILE}.png")
    return report
