"""Out-of-distribution detection by the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

Manifold Mixup's flatter class representations are claimed to make a model less confident off its
data (Verma et al., ICML 2019, section 5): the score of a sample is its top-1 probability, and a
good model scores in-distribution samples above out-of-distribution ones. :func:`ood_metrics`
reports the AUROC and the false-positive rate at 95 % true-positive rate with **in-distribution
as the positive class** (the convention of Hendrycks & Gimpel and of most OOD benchmarks): FPR95
is the fraction of OOD samples scored at or above the threshold that keeps 95 % of the
in-distribution samples.

Embedded default OOD set for MNIST models: :func:`photo_patches`, crops of scikit-image's
photographs (camera, coins, moon, text page, textures ...), resized to the model's input and
normalised as the classification recipe normalises (mean = std = 0.5 for grayscale, ImageNet
statistics for RGB). Photographs rather than scikit-learn's UCI digits: those are digits of the
same ten classes, so a model that generalises *should* be confident on them, and an OOD score
would punish it for that; they are kept as :func:`uci_digits`, a near-distribution shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PHOTOS", "ood_metrics", "ood_scores", "photo_patches", "uci_digits"]

PHOTOS = ("camera", "coins", "moon", "page", "text", "clock", "grass", "gravel", "brick", "cell",
          "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
"""``skimage.data`` images used by :func:`photo_patches` (all ship with scikit-image, no download)."""


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


def _normalise(images: np.ndarray, channels: int, mean: Sequence[float] | None,
               std: Sequence[float] | None) -> Tensor:
    x = torch.from_numpy(images).float() / 255.0
    if mean is None:
        mean = (0.485, 0.456, 0.406) if channels == 3 else (0.5,) * channels
    if std is None:
        std = (0.229, 0.224, 0.225) if channels == 3 else (0.5,) * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values (one per channel); received mean={list(mean)}, "
                         f"std={list(std)}")
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _check_size(image_size: int, channels: int, n: int) -> None:
    for name, value, lo in (("image_size", image_size, 4), ("n", n, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}; received {value!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; received {channels!r}")


def photo_patches(n: int = 500, *, image_size: int = 28, channels: int = 1, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, seed: int = 0) -> Tensor:
    """``n`` random square crops of scikit-image's photographs, as a normalised float batch.

    Each crop takes a photograph of :data:`PHOTOS` in turn, a side between a quarter and all of
    its shorter edge and a position from a seeded generator, and is resized (area averaging) to
    ``image_size``. Grayscale for ``channels=1``; colour photographs keep their colour for 3.

    Returns:
        ``(n, channels, image_size, image_size)`` float32, normalised like the recipe's inputs.
    """
    _check_size(image_size, channels, n)
    import skimage.color
    import skimage.data

    rng = np.random.default_rng(seed)
    out = np.empty((n, channels, image_size, image_size), dtype=np.float64)
    photos = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        if channels == 1:
            image = (skimage.color.rgb2gray(image) * 255.0) if image.ndim == 3 else image.astype(np.float64)
            image = image[..., None]
        elif image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(image.astype(np.float64))
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(max(min(h, w) // 4, image_size), min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(photo[top:top + side, left:left + side].transpose(2, 0, 1).copy())[None]
        out[i] = F.interpolate(crop, size=(image_size, image_size), mode="area")[0].numpy()
    return _normalise(out.clip(0, 255), channels, mean, std)


def uci_digits(n: int | None = None, *, image_size: int = 28, channels: int = 1, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, seed: int = 0) -> Tensor:
    """scikit-learn's 1,797 UCI digits (8x8, values 0-16), upsampled bilinearly, as a normalised batch.

    A near-distribution shift for MNIST models (same classes, other writers and scanner), not
    an OOD set. ``n`` digits drawn without replacement by ``seed`` (all when ``None``).
    """
    from sklearn.datasets import load_digits

    images = load_digits().images  # (1797, 8, 8), 0..16, white ink on black as MNIST
    if n is not None:
        _check_size(image_size, channels, n)
        if n > len(images):
            raise ValueError(f"n must be <= {len(images)} (the UCI digits); received {n}")
        images = images[np.random.default_rng(seed).permutation(len(images))[:n]]
    else:
        _check_size(image_size, channels, 1)
    x = torch.from_numpy(images * (255.0 / 16.0))[:, None]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 255)
    return _normalise(x.repeat(1, channels, 1, 1).numpy(), channels, mean, std)
