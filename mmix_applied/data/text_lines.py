"""Text-line images with transcriptions, for CTC line recognition (Graves et al., ICML 2006).

The list readers (IAM ``lines.txt``, ``path<TAB>text`` TSV) are in
:mod:`mmix_applied.data.line_readers` and re-exported here. Images are read with OpenCV as
grayscale and normalised to *ink = 1, paper = 0* (dark ink on light paper is inverted), so zero
padding is blank paper. Each line is resized to a fixed height keeping its aspect ratio;
:class:`LineCollate` pads a batch to its widest line and returns every line's true width, from
which the model computes each line's true CTC output length.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mmix_applied.data.image_files import ImageTooLargeError, check_decodable
from mmix_applied.data.line_readers import IAM_STATUSES, LineRecord, check_charset, read_iam_lines, read_tsv
from mmix_applied.data.seeding import augmentation_seed

__all__ = [
    "IAM_STATUSES",
    "LineRecord",
    "read_iam_lines",
    "read_tsv",
    "check_charset",
    "load_line_image",
    "normalise_height",
    "LineAugment",
    "prepare_line",
    "TextLineDataset",
    "LineCollate",
]


def load_line_image(path: str | os.PathLike, *, invert: bool = True, source: str | None = None) -> np.ndarray:
    """Read a line image as grayscale uint8 with ink high (255) and paper low (0).

    Args:
        path: The image file.
        invert: The file has dark ink on light paper (the usual case), so invert it.
        source: ``file:line`` of the list entry, added to error messages.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: OpenCV cannot decode it.
    """
    where = f" (listed at {source})" if source else ""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"line image not found: {path}{where}")
    try:
        check_decodable(path, what="line image")
    except ImageTooLargeError as err:
        raise ImageTooLargeError(f"{err}{where}") from None
    try:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    except cv2.error as err:
        raise ValueError(f"cannot read line image {path}{where}: OpenCV refused it "
                         f"({str(err).strip().splitlines()[-1]})") from err
    if image is None or image.size == 0:
        raise ValueError(f"cannot read line image {path}{where}: not an image format OpenCV decodes")
    return 255 - image if invert else image


def normalise_height(image: np.ndarray, *, height: int, max_width: int | None = None) -> np.ndarray:
    """Resize to ``height`` rows keeping the aspect ratio (width at least 1, at most ``max_width``)."""
    h, w = image.shape[:2]
    width = max(1, int(round(w * height / h)))
    if max_width is not None:
        width = min(width, max_width)
    if (h, w) == (height, width):
        return image
    shrink = height < h
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class LineAugment:
    """Handwriting-style augmentation (small affine and elastic warps, blur, contrast) with its own seed.

    albumentations' ``Compose`` draws from its own generator, re-seeded for every line from
    ``(seed, epoch, index)`` (the one rule of :mod:`mmix_applied.data.seeding`; the epoch comes from
    :meth:`set_epoch`, called by the engine through the data set): the draws depend on no global
    RNG and no worker layout, and a resumed run sees the augmentation an uninterrupted one would.

    Args:
        seed: Seed of the augmentation stream.
        strength: Scales every magnitude.
        p: Probability of each transform.
    """

    def __init__(self, *, seed: int = 0, strength: float = 1.0, p: float = 0.5) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, received {strength}")
        s = float(strength)
        self.seed, self.epoch = int(seed), 0
        self.transform = A.Compose(
            [
                A.Affine(
                    scale=(1 - 0.08 * s, 1 + 0.05 * s), rotate=(-2 * s, 2 * s), shear={"x": (-10 * s, 10 * s)},
                    translate_px={"y": (-int(2 * s), int(2 * s))}, border_mode=cv2.BORDER_CONSTANT, fill=0, p=p,
                ),
                A.ElasticTransform(alpha=4.0 * s, sigma=3.0, border_mode=cv2.BORDER_CONSTANT, fill=0, p=p * 0.5),
                A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.1, 0.2 + 0.6 * s), p=p * 0.5),
                A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=(-0.3 * s, 0.1 * s), p=p),
            ],
            seed=self.seed,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation stream the next call draws from."""
        self.epoch = int(epoch)

    def __call__(self, image: np.ndarray, *, index: int) -> np.ndarray:
        """Augment line ``index`` (a uint8 ``(H, W)`` ink-high image); the shape is kept."""
        self.transform.set_random_seed(augmentation_seed(self.seed, self.epoch, index))
        return self.transform(image=image)["image"]


def prepare_line(
    image: np.ndarray,
    *,
    height: int,
    augment: Callable[[np.ndarray], np.ndarray] | None = None,
    min_width: int = 1,
    max_width: int | None = None,
) -> torch.Tensor:
    """Height-normalise, augment and convert an ink-high uint8 image to a ``(1, height, W)`` float tensor in [0, 1].

    Lines narrower than ``min_width`` are padded on the right with paper (0).
    """
    line = normalise_height(image, height=height, max_width=max_width)
    if augment is not None:
        line = augment(np.ascontiguousarray(line))
    if line.shape[1] < min_width:
        line = np.pad(line, ((0, 0), (0, min_width - line.shape[1])))
    return torch.from_numpy(np.ascontiguousarray(line, dtype=np.float32) / 255.0).unsqueeze(0)


class TextLineDataset(Dataset):
    """Line images from disk with their transcriptions.

    Items are dicts ``{"image": (1, height, W) float, "text": str, "width": W, "source": "file:line",
    "path": image path}``.

    Args:
        records: From :func:`read_iam_lines` or :func:`read_tsv`.
        height: Height every line is resized to.
        augment: Applied after resizing as ``augment(image, index=i)`` (e.g. :class:`LineAugment`);
            None for evaluation.
        invert: Images are dark ink on light paper.
        min_width: Narrow lines are padded to this width (keep it >= what the model needs for the
            longest transcription's CTC path).
        max_width: Wider lines are squeezed to this width.
    """

    def __init__(
        self,
        records: Sequence[LineRecord],
        *,
        height: int = 32,
        augment: Callable[..., np.ndarray] | None = None,
        invert: bool = True,
        min_width: int = 1,
        max_width: int | None = None,
    ) -> None:
        if height < 1:
            raise ValueError(f"height must be >= 1, received {height}")
        self.records = list(records)
        self.height, self.augment, self.invert = height, augment, invert
        self.min_width, self.max_width = min_width, max_width

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the augmentation (the engine calls this at each training epoch)."""
        if callable(getattr(self.augment, "set_epoch", None)):
            self.augment.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_line_image(record.image_path, invert=self.invert, source=record.source)
        augment = functools.partial(self.augment, index=index) if self.augment is not None else None
        tensor = prepare_line(
            image, height=self.height, augment=augment, min_width=self.min_width, max_width=self.max_width
        )
        return {
            "image": tensor,
            "text": record.text,
            "width": tensor.shape[-1],
            "source": record.source,
            "path": str(record.image_path),
        }


class LineCollate:
    """Pad a list of line items into a batch for CTC.

    Returns ``{"images": (B, 1, H, W_max), "widths": (B,), "targets": (B, S_max), "target_lengths": (B,),
    "texts": [...], "sources": [...], "paths": [...]}``. Images are right-padded with 0 (paper); targets with 0 (the
    CTC blank, never read past ``target_lengths``). ``widths`` are the true widths before padding.

    Args:
        encode: Maps a transcription to class indices (1..C-1; 0 is the blank).
        pad_to_multiple: Round the padded width up to a multiple of this (e.g. the model's stride).
    """

    def __init__(self, encode: Callable[[str], Sequence[int]], *, pad_to_multiple: int = 1) -> None:
        if pad_to_multiple < 1:
            raise ValueError(f"pad_to_multiple must be >= 1, received {pad_to_multiple}")
        self.encode, self.pad_to_multiple = encode, pad_to_multiple

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        heights = {item["image"].shape[-2] for item in items}
        if len(heights) != 1:
            raise ValueError(f"all lines in a batch must share one height, received heights {sorted(heights)}")
        widths = torch.tensor([item["image"].shape[-1] for item in items], dtype=torch.long)
        width = int(widths.max())
        width = -(-width // self.pad_to_multiple) * self.pad_to_multiple
        images = torch.zeros(len(items), items[0]["image"].shape[0], heights.pop(), width)
        for i, item in enumerate(items):
            images[i, :, :, : item["image"].shape[-1]] = item["image"]
        encoded = [list(self.encode(item["text"])) for item in items]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        targets = torch.zeros(len(items), max(1, int(lengths.max())), dtype=torch.long)
        for i, e in enumerate(encoded):
            targets[i, : len(e)] = torch.as_tensor(e, dtype=torch.long)
        return {
            "images": images,
            "widths": widths,
            "targets": targets,
            "target_lengths": lengths,
            "texts": [item["text"] for item in items],
            "sources": [item.get("source", "") for item in items],
            "paths": [item.get("path", item.get("source", "")) for item in items],
        }
