"""Embedded out-of-distribution batches for the OOD figures of :mod:`mmix_applied.metrics.ood`.

The default OOD set for MNIST models is :func:`photo_patches`, crops of scikit-image's
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

__all__ = ["PHOTOS", "photo_patches", "uci_digits"]

PHOTOS = ("camera", "coins", "moon", "page", "text", "clock", "grass", "gravel", "brick", "cell",
          "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
"""``skimage.data`` images used by :func:`photo_patches` (all ship with scikit-image, no download)."""


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
