"""Labeled image sets for classification: image folders, CSV files of paths and labels, arrays.

Augmentation is albumentations; each sample's augmentation is seeded from ``(seed, epoch, index)``
so a resumed run sees exactly the images an uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from mmix_applied.data.constants import IMAGE_SUFFIXES
from mmix_applied.data.image_files import check_decodable
from mmix_applied.data.seeding import SeededAugmentation
from mmix_applied.data.segmentation_2d import read_image as read_float_image
from mmix_applied.errors import MmixWarning

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "ImageFileDataset",
    "IndexedDataset",
    "SPLIT_FOLDER_NAMES",
    "build_transforms",
    "find_split_folders",
    "list_image_folder",
    "read_image",
    "read_labels_csv",
]

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the shared tuple (mmix_applied.data.constants), under its old name


def list_image_folder(root: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """List ``root/<class>/<image>`` files.

    Returns:
        ``(items, class_names)``: items are ``(path, class_index)`` with classes in sorted order.

    Raises:
        FileNotFoundError: If ``root`` is missing.
        ValueError: If it has no class subfolders or no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist; expected root/<class>/<image files>")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {str(root)!r} has no class subfolders; expected root/<class>/<image files>")
    items = []
    for index, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                items.append((str(path), index))
    if not items:
        raise ValueError(f"image folder {str(root)!r} has class folders {classes} but no images "
                         f"with extensions {', '.join(IMAGE_EXTENSIONS)}")
    return items, classes


#: Folder names of the splits in a split layout (``root/train/<class>/...``, as torchvision and timm users keep
#: ImageNet-style data sets), per split.
SPLIT_FOLDER_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"),
                      "test": ("test", "testing")}


def find_split_folders(root: str | os.PathLike) -> dict[str, Path] | None:
    """The split folders of ``root`` when it is laid out per split (``root/train/<class>/``, ``root/val/<class>/``,
    ``root/test/<class>/``), else ``None`` (a plain ``root/<class>/`` folder).

    A subfolder counts as a split when its name is one of :data:`SPLIT_FOLDER_NAMES` and it holds
    subfolders itself (the classes).

    Raises:
        ValueError: Split folders beside other folders, two folders for one split, or no training folder.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: dict[str, list[Path]] = {}
    for folder in subfolders:
        split = next((k for k, names in SPLIT_FOLDER_NAMES.items() if folder.name.lower() in names), None)
        if split is not None and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
            found.setdefault(split, []).append(folder)
    if not found:
        return None
    names = sorted(p.name for folders in found.values() for p in folders)
    others = [p.name for p in subfolders if p.name not in names]
    if others:
        raise ValueError(f"image folder {str(root)!r} holds split folders {names} beside other folders {others[:5]}; "
                         "keep either one folder per split (train/<class>/, val/<class>/, test/<class>/) or one "
                         "folder per class, not both")
    twice = {k: [p.name for p in v] for k, v in found.items() if len(v) > 1}
    if twice:
        raise ValueError(f"image folder {str(root)!r} has several folders for one split: {twice}; keep one")
    if "train" not in found:
        raise ValueError(f"image folder {str(root)!r} holds split folders {names} but no training folder "
                         f"({'/'.join(SPLIT_FOLDER_NAMES['train'])}); add train/<class>/ images, or point data.path "
                         "at a folder of class subfolders")
    return {k: v[0] for k, v in found.items()}


def read_labels_csv(path: str | os.PathLike, *, path_column: str = "path", label_column: str | None = "label",
                    class_names: Sequence[str] | None = None) -> tuple[list[tuple[str, int | None]], list[str]]:
    """Read a CSV of image paths and labels (paths relative to the CSV's folder or absolute).

    Args:
        path: The CSV file.
        path_column: Column holding image paths.
        label_column: Column holding class names or indices; ``None`` for unlabeled images.
        class_names: Fix the class order (default: sorted distinct labels).

    Returns:
        ``(items, class_names)`` with items ``(path, class_index or None)``.

    A byte-order mark (Excel's "CSV UTF-8") is skipped; column names and labels lose surrounding
    spaces (``"cat "`` is ``"cat"``), and an empty label is an error naming its lines.

    Raises:
        FileNotFoundError: The CSV does not exist.
        ValueError: It is a folder, lacks a column, has no rows, an empty or unknown label.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.csv"))
        raise ValueError(f"labels CSV {str(path)!r} is a folder, not a CSV file; data.source: csv reads a CSV of "
                         f"{path_column},{label_column or 'label'} rows" + (f" (this folder holds {found[:5]}: give "
                         f"one of them)" if found else "") + "; for a folder of class subfolders set "
                         "data.source: folder")
    if not path.is_file():
        raise FileNotFoundError(f"labels CSV {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        columns = reader.fieldnames
        needed = [path_column] + ([label_column] if label_column else [])
        for col in needed:
            if col not in columns:
                raise ValueError(f"labels CSV {str(path)!r} has no column {col!r}; columns: {columns}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"labels CSV {str(path)!r} has no rows")
    raw_labels = [(row[label_column] or "").strip() for row in rows] if label_column else [None] * len(rows)
    empty = [line for line, lab in enumerate(raw_labels, start=2) if lab == ""]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise ValueError(f"labels CSV {str(path)!r} has an empty label on line{'s' if len(empty) > 1 else ''} "
                         f"{shown} (column {label_column!r}); fill them in or remove those rows (an empty label "
                         "would become a class of its own)")
    if class_names is None:
        distinct = sorted({lab for lab in raw_labels if lab is not None})
        if distinct and all(lab.lstrip("-").isdigit() for lab in distinct):
            distinct = sorted(distinct, key=int)
        class_names = distinct
    lookup = {name: i for i, name in enumerate(class_names)}
    items: list[tuple[str, int | None]] = []
    for lineno, (row, lab) in enumerate(zip(rows, raw_labels), start=2):
        image = Path(row[path_column])
        if not image.is_absolute():
            image = path.parent / image
        if lab is not None and lab not in lookup:
            raise ValueError(f"labels CSV {str(path)!r} line {lineno}: label {lab!r} is not one of {list(class_names)}")
        items.append((str(image), None if lab is None else lookup[lab]))
    return items, list(class_names)


def read_image(path: str | os.PathLike, *, channels: int = 3) -> np.ndarray:
    """Read an image as ``uint8`` ``(H, W, channels)`` (1 = grayscale, 3 = RGB).

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Unreadable/truncated file, NaN/Inf samples, or unsupported ``channels``.

    TIFFs are read as stored: 16-bit and float32 samples are scaled to 8 bits (see :func:`_tiff_to_uint8`).
    """
    import cv2

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), received {channels}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    check_decodable(path)  # from the header: a huge image is refused by name before it is decoded
    data = np.fromfile(str(path), dtype=np.uint8)
    if data[:4].tobytes() in _TIFF_MAGIC:  # TIFFs may hold 16-bit or float samples: read them as stored
        return _tiff_to_uint8(path, channels=channels)
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        image = cv2.imdecode(data, flag) if data.size else None
    except cv2.error as err:
        raise ValueError(f"image {str(path)!r} cannot be decoded: OpenCV refused it "
                         f"({str(err).strip().splitlines()[-1]})") from err
    if image is None:
        raise ValueError(f"image {str(path)!r} cannot be decoded (truncated, corrupt or not an image)")
    if channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        image = image[:, :, None]
    return image


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_warned_scaling: set[str] = set()


def _tiff_to_uint8(path: Path, *, channels: int) -> np.ndarray:
    """A TIFF as stored (8/16-bit or float samples) as ``uint8`` ``(H, W, channels)``.

    Read by the 2D segmentation reader (integers scaled to [0, 1] by their type's maximum, NaN/Inf
    refused); samples in [0, 1] are then multiplied by 255, and float samples in any other range
    are min-max scaled per image to [0, 255] (a warning says so, once per process).
    """
    image = read_float_image(path, in_channels=channels)
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        image = (image - lo) / (hi - lo)
        if "minmax" not in _warned_scaling:
            _warned_scaling.add("minmax")
            warnings.warn(f"image {str(path)!r} has float samples in [{lo:g}, {hi:g}], outside [0, 1]: each such "
                          "image is min-max scaled to [0, 255] before normalisation; convert the images to 8-bit "
                          "yourself for another scaling", MmixWarning, stacklevel=3)
    return np.round(image * 255.0).astype(np.uint8)


def build_transforms(*, image_size: int, train: bool, augment: str = "light", channels: int = 3,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> A.Compose:
    """Albumentations pipeline: resize, (train) augmentation, normalisation, to a CHW tensor.

    Args:
        image_size: Square output size.
        train: Add the augmentation for training.
        augment: ``none``, ``light`` (small shifts/rotations) or ``standard`` (plus flips and colour).
        channels: Image channels, for the default mean/std.
        mean: Normalisation mean per channel (default 0.5 for grayscale, ImageNet for RGB).
        std: Normalisation std per channel.
    """
    from albumentations.pytorch import ToTensorV2

    if augment not in ("none", "light", "standard"):
        raise ValueError(f"augment must be 'none', 'light' or 'standard', received {augment!r}")
    if mean is None:
        mean = (0.5,) * channels if channels != 3 else (0.485, 0.456, 0.406)
    if std is None:
        std = (0.5,) * channels if channels != 3 else (0.229, 0.224, 0.225)
    ops: list[Any] = [A.Resize(image_size, image_size)]
    if train and augment != "none":
        ops.append(A.Affine(translate_percent=(-0.08, 0.08), rotate=(-10, 10), scale=(0.9, 1.1), p=0.8))
        if augment == "standard":
            ops += [A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=0.5)]
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(ops, seed=0)


class _SeededAugmentation(SeededAugmentation):
    """Base: applies ``transform`` with a per-sample seed from ``(seed, epoch, index)``."""

    def __init__(self, transform: A.Compose | None, seed: int) -> None:
        super().__init__(seed=seed)
        self.transform = transform

    def _apply(self, image: np.ndarray, index: int) -> torch.Tensor:
        if self.transform is None:
            tensor = torch.from_numpy(np.array(image.transpose(2, 0, 1))).float() / 255.0
            return tensor
        return self.seed_for(self.transform, index)(image=image)["image"].float()


class ArrayImageDataset(_SeededAugmentation):
    """Images held in memory: ``uint8`` ``(N, H, W)`` or ``(N, H, W, C)`` with integer labels.

    Items are ``(image (C, H, W) float tensor, label int64 tensor)``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, transform: A.Compose | None = None,
                 seed: int = 0) -> None:
        super().__init__(transform, seed)
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C), received shape {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._apply(self.images[index], index), torch.tensor(self.labels[index])


class ImageFileDataset(_SeededAugmentation):
    """Images read from files; items are ``(image, label)`` (label -1 when unknown)."""

    def __init__(self, items: Sequence[tuple[str, int | None]], *, channels: int = 3,
                 transform: A.Compose | None = None, seed: int = 0) -> None:
        super().__init__(transform, seed)
        self.items = list(items)
        self.channels = channels

    @property
    def labels(self) -> np.ndarray:
        """Labels as an array (-1 for unlabeled)."""
        return np.array([-1 if lab is None else lab for _, lab in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.items[index]
        image = read_image(path, channels=self.channels)
        return self._apply(image, index), torch.tensor(-1 if label is None else label)


class IndexedDataset(Dataset):
    """Adds each item's index to it (``(*item, index)``), so predictions map back to their inputs.

    Args:
        dataset: Items that are tuples.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.dataset[index], index)
