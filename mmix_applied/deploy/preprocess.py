"""Inputs for :meth:`mmix_applied.deploy.LoadedRun.predict`, preprocessed as the run's own ``predict`` does.

Each function takes what a user has (image files, or arrays as an image file holds them) and the
``preprocessing`` record of the run (:mod:`mmix_applied.deploy.info`), and returns the network's
input batch. The readers and pipelines are the data layer's own (:mod:`mmix_applied.data`): the
same code ``mmix-applied predict`` runs, so a loaded run and the CLI agree to the last bit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mmix_applied.data.images import build_transforms, read_image
from mmix_applied.data.segmentation_2d import build_2d_transforms
from mmix_applied.data.segmentation_2d import read_image as read_float_image
from mmix_applied.data.text_lines import LineCollate, load_line_image, prepare_line

__all__ = ["ImageInput", "as_list", "classification_batch", "line_batch", "segmentation_image"]

#: One image: a file path, or an array as read from an image file (``(H, W)`` or ``(H, W, C)``).
ImageInput = str | os.PathLike | np.ndarray


def as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a sequence of them, as a list (a string is one path, not a sequence of characters).

    Raises:
        TypeError: For anything else (the message says what is accepted).
    """
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        return [images]
    if isinstance(images, Sequence) and all(isinstance(i, (str, os.PathLike, np.ndarray)) for i in images):
        return list(images)
    raise TypeError(f"predict takes image files (paths), arrays as read from image files, or a preprocessed "
                    f"torch.Tensor batch; received {type(images).__name__}")


def _uint8(image: np.ndarray, what: str) -> np.ndarray:
    """``image`` itself when it is ``uint8`` (as read from an image file); else a clear error naming ``what``."""
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: arrays are uint8 (0-255) as read from an image file; received dtype "
                         f"{image.dtype}. Convert it, or pass the preprocessed batch as a torch.Tensor")
    return image


def _channels(image: np.ndarray, channels: int, what: str) -> np.ndarray:
    """``(H, W)`` / ``(H, W, C)`` -> ``(H, W, channels)``: grey repeated, colour made grey, alpha dropped."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"{what}: an image array is (H, W) or (H, W, C); received shape {tuple(image.shape)}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[2] == channels:
        return image
    if image.shape[2] == 1:
        return np.repeat(image, channels, axis=2)
    if image.shape[2] == 3 and channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    raise ValueError(f"{what}: the image has {image.shape[2]} channels, the model takes {channels}")


def classification_batch(images: Sequence[ImageInput], pre: Mapping[str, Any]) -> torch.Tensor:
    """``(N, C, S, S)``: read (RGB or grey), resize to ``image_size`` square, scale by 255, normalise.

    Arrays are ``uint8`` as read from an image file (RGB channel order).
    """
    channels, size = int(pre["channels"]), int(pre["image_size"])
    transform = build_transforms(image_size=size, train=False, augment="none", channels=channels,
                                 mean=pre["mean"], std=pre["std"])
    out = []
    for i, item in enumerate(images):
        if isinstance(item, np.ndarray):
            array = _channels(_uint8(item, f"image {i}"), channels, f"image {i}")
        else:
            array = read_image(item, channels=channels)
        out.append(transform(image=array)["image"])
    return torch.stack(out).float()


def segmentation_image(image: ImageInput, pre: Mapping[str, Any]) -> tuple[torch.Tensor, tuple[int, int]]:
    """``((C, H', W'), (H, W))``: scaled to [0, 1] by the integer type, normalised, zero-padded bottom/right.

    ``(H, W)`` is the size before padding (the predicted mask is cropped back to it).
    """
    channels = int(pre["in_channels"])
    if isinstance(image, np.ndarray):
        array = _channels(image, channels, "image")
        scale = float(np.iinfo(array.dtype).max) if np.issubdtype(array.dtype, np.integer) else 1.0
        array = array.astype(np.float32) / scale
    else:
        array = read_float_image(Path(image), in_channels=channels)
    mean = np.asarray(pre.get("mean", [0.0] * channels), dtype=np.float32)
    std = np.asarray(pre.get("std", [1.0] * channels), dtype=np.float32)
    array = ((array - mean) / std).astype(np.float32)
    size = (int(array.shape[0]), int(array.shape[1]))
    padded = build_2d_transforms(train=False, pad_divisor=int(pre.get("pad_divisor", 32)))(image=array)["image"]
    return torch.from_numpy(np.ascontiguousarray(np.atleast_3d(padded).transpose(2, 0, 1))).float(), size


def line_batch(images: Sequence[ImageInput], pre: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``((N, 1, height, W_max), widths)``: grey, ink high, height-normalised, padded right with paper.

    Arrays are ``uint8`` as read from an image file (dark ink on light paper when ``invert``).
    """
    items = []
    for i, item in enumerate(images):
        if isinstance(item, np.ndarray):
            grey = _channels(_uint8(item, f"line {i}"), 1, f"line {i}")[:, :, 0]
            ink = 255 - grey if pre.get("invert", True) else grey
        else:
            ink = load_line_image(item, invert=bool(pre.get("invert", True)))
        tensor = prepare_line(ink, height=int(pre["height"]), min_width=int(pre.get("min_width") or 1),
                              max_width=pre.get("max_width"))
        items.append({"image": tensor, "text": ""})
    batch = LineCollate(lambda _text: [])(items)
    return batch["images"], batch["widths"]
