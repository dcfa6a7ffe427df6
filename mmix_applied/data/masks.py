"""Segmentation masks: the three modes and the check of a mask's values, shared by 2D and 3D data."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from mmix_applied.data.constants import SEGMENTATION_MODES

__all__ = ["MaskMode", "check_mask_values", "mask_labels"]

MaskMode = Literal["multiclass", "binary", "multilabel"]


def check_mask_values(
    mask: np.ndarray, *, mode: MaskMode, num_classes: int, ignore_index: int | None = None, source: str = "mask"
) -> None:
    """Raise ``ValueError`` if ``mask`` holds values its mode does not allow.

    multiclass: integers in ``[0, num_classes)``; binary and multilabel: 0 or 1; ``ignore_index``
    is allowed everywhere.
    """
    if mode not in SEGMENTATION_MODES:
        raise ValueError(f"mask mode {mode!r} is not one of {', '.join(SEGMENTATION_MODES)}")
    values = np.unique(mask)
    if ignore_index is not None:
        values = values[values != ignore_index]
    valid = range(num_classes) if mode == "multiclass" else (0, 1)
    bad = [int(v) if float(v).is_integer() else v for v in values.tolist() if v not in valid or float(v) != int(v)]
    if bad:
        allowed = f"0..{num_classes - 1}" if mode == "multiclass" else "0 and 1"
        hint = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        void = (" 255 marks 'void' (unlabelled) pixels in Pascal VOC and CVAT masks: set data.ignore_index: 255 "
                "to leave them out of the loss and the metrics." if 255 in bad and ignore_index is None else "")
        raise ValueError(
            f"{source} has values {bad[:8]} outside the {mode} range ({allowed}{hint}); check num_classes, "
            f"the mask mode, or set data.ignore_index for 'unlabelled' pixels.{void}"
        )


def mask_labels(logits: torch.Tensor, mode: MaskMode, num_classes: int) -> torch.Tensor:
    """Masks from ``(B, C, *S)`` logits: class indices ``(B, *S)`` (multiclass; uint8 up to 256 classes),
    0/1 ``(B, *S)`` (binary) or 0/1 ``(B, C, *S)`` (multilabel). The recipe's ``predict`` and ``load_run``
    write the same masks with it."""
    if mode == "multiclass":
        return logits.argmax(dim=1).to(torch.uint8 if num_classes <= 256 else torch.int32)
    if mode == "binary":
        return (logits[:, 0] > 0).to(torch.uint8)
    return (logits > 0).to(torch.uint8)
