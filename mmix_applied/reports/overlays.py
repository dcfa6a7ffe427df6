"""Segmentation predictions a person can look at: colour overlays and probability maps, written atomically.

An overlay is the input image (grey, rescaled to its own min-max) with every predicted class
but the background painted in a fixed colour per class, blended at ``alpha``; a probability map
holds the per-class probabilities: ``.npy`` ``(C, H, W)`` ``float16`` for 2D images, ``float32``
NIfTI (it has no half precision) with the classes on the last axis and the input's affine for 3D
volumes. Both go through
:mod:`mmix_applied.utils.atomic`, so a kill never leaves half a file.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np

from mmix_applied.utils.atomic import atomic_write_bytes

__all__ = ["PALETTE", "colour_overlay", "middle_slice", "write_overlay", "write_probabilities"]

#: RGB colour of class ``k`` (class 0, the background, is left unpainted); repeats after 20 classes.
PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128],
], dtype=np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` or ``(H, W)`` floats as ``(H, W)`` uint8 (channel mean, own min-max)."""
    image = np.asarray(image, dtype=np.float64)
    plane = image.mean(0) if image.ndim == 3 else image
    lo, hi = float(plane.min(initial=0.0)), float(plane.max(initial=0.0))
    scaled = (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)
    return np.round(scaled * 255).astype(np.uint8)


def colour_overlay(image: Any, labels: Any, *, alpha: float = 0.5) -> np.ndarray:
    """The image in grey with each foreground class painted in :data:`PALETTE`'s colour, ``(H, W, 3)`` RGB uint8.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` input (any range).
        labels: ``(H, W)`` class indices, or ``(L, H, W)`` 0/1 per label (multilabel: label ``l`` takes
            colour ``l + 1``; where labels overlap the last one shows).
        alpha: Weight of the class colour.

    Raises:
        ValueError: The labels' plane does not match the image's.
    """
    grey = _grey(image)
    labels = np.asarray(labels)
    if labels.shape[-2:] != grey.shape:
        raise ValueError(f"labels of shape {labels.shape} for an image plane of shape {grey.shape}; they must match")
    if labels.ndim == 3:
        index = np.zeros(grey.shape, dtype=np.int64)
        for label in range(labels.shape[0]):
            index[labels[label] > 0] = label + 1
    else:
        index = labels.astype(np.int64)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
    colour = PALETTE[1:][(index - 1) % (len(PALETTE) - 1)].astype(np.float64)
    painted = index > 0
    rgb[painted] = (1 - alpha) * rgb[painted] + alpha * colour[painted]
    return np.round(rgb).astype(np.uint8)


def middle_slice(volume: np.ndarray) -> np.ndarray:
    """The middle plane along the last axis of ``(..., H, W, D)`` (an axial slice of a RAS volume)."""
    volume = np.asarray(volume)
    return volume[..., volume.shape[-1] // 2]


def write_overlay(path: str | os.PathLike, image: Any, labels: Any, *, alpha: float = 0.5) -> Path:
    """:func:`colour_overlay` as a PNG at ``path`` (atomic)."""
    rgb = colour_overlay(image, labels, alpha=alpha)
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV writes BGR
    if not ok:
        raise ValueError(f"could not encode the overlay of {str(path)!r} as PNG")
    return atomic_write_bytes(Path(path), encoded.tobytes())


def write_probabilities(path: str | os.PathLike, probs: Any, *, affine: Any = None) -> Path:
    """Class probabilities ``(C, *S)``: ``.npy`` float16 as given, or (``affine`` set) float32 NIfTI, classes last."""
    path = Path(path)
    if affine is None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(probs, dtype=np.float16))
        return atomic_write_bytes(path, buffer.getvalue())
    volume = np.moveaxis(np.asarray(probs, dtype=np.float32), 0, -1)
    image = nib.Nifti1Image(volume, np.asarray(affine, dtype=np.float64))
    data = image.to_bytes()
    return atomic_write_bytes(path, gzip.compress(data) if path.name.endswith(".gz") else data)
