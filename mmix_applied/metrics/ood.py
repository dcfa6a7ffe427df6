"""Out-of-distribution detection by the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

Manifold Mixup's flatter class representations are claimed to make a model less confident off its
data (Verma et al., ICML 2019, section 5): the score of a sample is its top-1 probability, and a
good model scores in-distribution samples above out-of-distribution ones. :func:`ood_metrics`
reports the AUROC and the false-positive rate at 95 % true-positive rate with **in-distribution
as the positive class** (the convention of Hendrycks & Gimpel and of most OOD benchmarks): FPR95
is the fraction of OOD samples scored at or above the threshold that keeps 95 % of the
in-distribution samples.

The embedded out-of-distribution batches are in :mod:`mmix_applied.data.ood`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["ood_metrics", "ood_scores"]



def ood_scores(logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Maximum softmax probability of ``logits / temperature``, one score per row.

    Args:
        logits: ``(N, C)`` class logits; ``C == 1`` is a binary sigmoid (score ``max(p, 1 - p)``).
        temperature: Divide the logits by it first (a fitted calibration temperature).

    Returns:
        ``(N,)`` float scores in ``[1/C, 1]``; higher means more in-distribution.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a (N, C) tensor; received {shape}")
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0; received {temperature!r}")
    z = logits.detach().float() / float(temperature)
    if z.shape[1] == 1:
        p = torch.sigmoid(z[:, 0])
        return torch.maximum(p, 1 - p)
    return torch.softmax(z, dim=1).max(1).values


def _as_array(scores: Tensor | Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    if isinstance(scores, Tensor):
        scores = scores.detach().cpu().double().numpy()
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty; both score sets need at least one sample")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or Inf values; received {array[~np.isfinite(array)][:3].tolist()}")
    return array


def ood_metrics(in_scores: Tensor | Sequence[float], out_scores: Tensor | Sequence[float], *,
                tpr: float = 0.95) -> dict[str, float]:
    """AUROC and FPR at ``tpr`` of a score that should be higher in distribution.

    In-distribution samples are the positives. ``auroc`` is the probability that a random
    in-distribution sample outscores a random OOD one (ties count one half; the Mann-Whitney
    statistic, equal to ``sklearn.metrics.roc_auc_score``). ``fpr95`` takes the threshold ``t``
    as the largest score with at least ``tpr`` of the in-distribution scores ``>= t`` and
    returns the fraction of OOD scores ``>= t`` (the first point of ``sklearn.metrics.roc_curve``
    whose TPR reaches ``tpr``).

    Returns:
        ``{"auroc": ..., "fpr95": ...}`` (the key is ``fpr95`` whatever ``tpr`` is).
    """
    pos, neg = _as_array(in_scores, "in_scores"), _as_array(out_scores, "out_scores")
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1]; received {tpr!r}")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_scores = both[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    n_pos, n_neg = pos.size, neg.size
    auroc = (ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    k = int(np.ceil(tpr * n_pos - 1e-9))
    threshold = np.sort(pos)[::-1][max(k, 1) - 1]
    fpr = float((neg >= threshold).mean())
    return {"auroc": float(auroc), "fpr95": fpr}
