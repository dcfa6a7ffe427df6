"""2D segmentation data on the user's own files: an image folder and a mask folder.

Files are matched by name (stem) and read with OpenCV (PNG, TIFF, JPEG, BMP, WebP); masks hold
class indices (multiclass; a palette PNG's indices, as Pascal VOC and CVAT write them), 0/1 or 0/255
(binary) or one 0/1 channel per label (multilabel).
Albumentations pipelines transform image and mask together (intensity, elastic, flip), so a mask
always stays aligned with its image; each sample's draw is seeded from ``(seed, epoch, index)``.

Mixing these batches follows Manifold Mixup (Verma et al., ICML 2019): the dense masks become
soft targets in :class:`mmix_applied.adapters.Segmentation`; nothing here mixes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mmix_applied.data.constants import IMAGE_SUFFIXES, SEGMENTATION_MODES
from mmix_applied.data.image_files import ImageHeader, check_decodable, imread_checked, read_header, read_indices
from mmix_applied.data.masks import MaskMode, check_mask_values
from mmix_applied.data.seeding import SeededAugmentation

__all__ = [
    "NamedSlices",
    "SegmentationFolder",
    "build_2d_transforms",
    "find_pairs",
    "read_image",
    "read_mask",
]


def find_pairs(
    image_dir: str | Path, mask_dir: str | Path | None = None, *, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> list[tuple[Path, Path | None]]:
    """List ``(image, mask)`` files matched by stem (``a.png`` pairs with ``a.tif``), sorted by name.

    Args:
        image_dir: Folder of images.
        mask_dir: Folder of masks; ``None`` lists images only (for prediction), masks are ``None``.
        suffixes: File endings accepted (case-insensitive).

    Raises:
        FileNotFoundError: If a folder does not exist.
        ValueError: If a folder has no images, a stem appears twice, or names do not match.
    """
    images = _index_folder(image_dir, suffixes, "image")
    if mask_dir is None:
        return [(images[k], None) for k in sorted(images)]
    masks = _index_folder(mask_dir, suffixes, "mask")
    only_img, only_mask = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if only_img or only_mask:
        raise ValueError(
            f"image and mask names do not match: {len(only_img)} image(s) without a mask "
            f"{only_img[:5]} in {image_dir}, {len(only_mask)} mask(s) without an image {only_mask[:5]} "
            f"in {mask_dir}; give each mask the file name (stem) of its image"
        )
    return [(images[k], masks[k]) for k in sorted(images)]


def _index_folder(folder: str | Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist or is not a folder")
    allowed = {s.lower() for s in suffixes}
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in allowed:
            continue
        if path.stem in index:
            raise ValueError(f"two {what} files share the name {path.stem!r}: {index[path.stem].name}, {path.name}")
        index[path.stem] = path
    if not index:
        raise ValueError(f"{what} folder {str(folder)!r} has no files ending in {sorted(allowed)}")
    return index


def _imread(path: Path, *, what: str = "image", header: ImageHeader | None = None) -> np.ndarray:
    return imread_checked(path, cv2.IMREAD_UNCHANGED, what=what, header=header)


def read_image(path: str | Path, *, in_channels: int = 3) -> np.ndarray:
    """Read an image as float32 ``(H, W, in_channels)`` scaled to [0, 1] by its integer type.

    Grey images are repeated to 3 channels and colour images converted to grey as
    ``in_channels`` asks; OpenCV's BGR order becomes RGB.

    Raises:
        ValueError: If the file cannot be decoded or its channels cannot become ``in_channels``.
    """
    path = Path(path)
    image = _imread(path)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:  # drop alpha
        image = image[:, :, :3]
    if image.shape[2] == 3:
        image = np.ascontiguousarray(image[:, :, ::-1])  # OpenCV's BGR -> RGB
    scale = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    image = image.astype(np.float32) / scale
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise ValueError(f"{str(path)!r} holds {bad} NaN/Inf pixel values; fix or replace the file (e.g. "
                         "np.nan_to_num before saving) so that training does not stop later on a NaN loss")
    channels = image.shape[2]
    if channels == in_channels:
        return image
    if channels == 1:
        return np.repeat(image, in_channels, axis=2)
    if channels == 3 and in_channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    raise ValueError(f"{str(path)!r} has {channels} channels, the model expects in_channels={in_channels}")


def read_mask(
    path: str | Path, *, mode: MaskMode, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Read a mask: ``(H, W)`` int64 class indices (multiclass), ``(H, W, 1)`` (binary) or
    ``(H, W, C)`` (multilabel) with values 0/1. Binary and multilabel masks saved as 0/255 are
    read as 0/1 (unless 255 is the ``ignore_index``).

    A palette PNG (Pascal VOC ``SegmentationClass``, CVAT and LabelMe exports) is read as its
    palette *indices*, the classes, not as colours (255, VOC's "void" border, is then a value for
    ``ignore_index``); a grey mask with an alpha channel is read without the alpha.

    Raises:
        ValueError: If the file cannot be decoded, has the wrong number of channels, or holds
            values out of range (see :func:`check_mask_values`).
    """
    path = Path(path)
    header = read_header(path)
    check_decodable(path, header, what="mask")
    indexed = header is not None and header.mode in ("P", "PA", "LA", "La")
    if indexed and header.palette and mode == "multilabel":
        raise ValueError(
            f"mask {str(path)!r} is a palette image: one class index per pixel, not one channel per label; "
            "read it as classes with data.mode: multiclass (mode='multiclass'), or save one 0/1 channel per label"
        )
    mask = read_indices(path, header) if indexed else _imread(path, what="mask", header=header)
    if mask.ndim == 3 and mask.shape[2] in (2, 4) and mode != "multilabel":
        mask = mask[:, :, : mask.shape[2] - 1]  # grey or colour with alpha: the alpha is not a class
    if mask.ndim == 3 and mode != "multilabel":
        if not all(np.array_equal(mask[:, :, 0], mask[:, :, c]) for c in range(1, mask.shape[2])):
            raise ValueError(
                f"mask {str(path)!r} is a colour image ({mask.shape[2]} different channels); {mode} masks hold "
                "one class index per pixel: save it as a palette PNG (its indices are read as the classes, as "
                "Pascal VOC and CVAT export them) or as a one-channel PNG of class indices 0..num_classes-1; "
                "if each channel is a separate label, set data.mode: multilabel (mode='multilabel')"
            )
        mask = mask[:, :, 0]
    palette = header is not None and header.palette
    if mode != "multiclass" and not palette and ignore_index != 255 and mask.max(initial=0) == 255:
        mask = np.where(mask == 255, 1, mask)
    if mode == "multilabel":
        if mask.ndim == 2:
            mask = mask[:, :, None]
        elif mask.shape[2] in (3, 4):  # OpenCV's BGR(A) -> RGB(A): channel c is label c
            mask = mask[:, :, [2, 1, 0, 3][: mask.shape[2]]]
        if mask.shape[2] != num_classes:
            raise ValueError(
                f"multilabel mask {str(path)!r} has {mask.shape[2]} channel(s), expected num_classes={num_classes}"
            )
    check_mask_values(mask, mode=mode, num_classes=num_classes, ignore_index=ignore_index, source=f"mask {str(path)!r}")
    if mode == "multiclass":
        return mask.astype(np.int64)
    return np.ascontiguousarray(mask[:, :, None] if mask.ndim == 2 else mask).astype(np.uint8)


def build_2d_transforms(
    *,
    train: bool,
    crop_size: Sequence[int] | None = None,
    pad_divisor: int = 32,
    flip: bool = True,
    elastic: bool = True,
    intensity: bool = True,
    seed: int | None = None,
) -> A.Compose:
    """Albumentations pipeline applied to image and mask together.

    Every pipeline zero-pads (mask: 0) at the bottom/right to a multiple of ``pad_divisor``, so
    an encoder–decoder gets valid sizes and a prediction crops back with ``[:H, :W]``. Training
    adds, as asked: a random crop to ``crop_size``, horizontal flip, elastic deformation (nearest
    neighbour on the mask) and brightness/contrast/gamma changes (image only).

    Args:
        train: Build the random training pipeline (else the deterministic evaluation one).
        crop_size: ``(height, width)`` of training crops (padded first if the image is smaller).
        pad_divisor: Height and width are padded up to a multiple of this.
        seed: Seed of the pipeline's own generator (albumentations ``Compose(seed=...)``).
    """
    steps: list[Any] = []
    if train and crop_size is not None:
        h, w = (int(v) for v in crop_size)
        steps += [A.PadIfNeeded(min_height=h, min_width=w, position="top_left", fill=0, fill_mask=0),
                  A.RandomCrop(height=h, width=w)]
    if train and flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if train and elastic:
        steps.append(A.ElasticTransform(alpha=20.0, sigma=5.0, p=0.3))
    if train and intensity:
        steps += [A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
                  A.RandomGamma(gamma_limit=(85, 115), p=0.3)]
    steps.append(A.PadIfNeeded(min_height=None, min_width=None, pad_height_divisor=pad_divisor,
                               pad_width_divisor=pad_divisor, position="top_left", fill=0, fill_mask=0))
    return A.Compose(steps, seed=seed)


def _to_tensors(image: np.ndarray, mask: np.ndarray | None, mode: MaskMode) -> tuple[torch.Tensor, Any]:
    x = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1))).float()
    if mask is None:
        return x, None
    if mode == "multiclass":
        return x, torch.from_numpy(np.ascontiguousarray(mask)).long()
    return x, torch.from_numpy(np.ascontiguousarray(np.atleast_3d(mask).transpose(2, 0, 1))).float()


class SegmentationFolder(SeededAugmentation):
    """2D segmentation pairs from two folders (or images only, for prediction).

    Items are ``(image (C, H, W) float32, mask)`` with a multiclass mask ``(H, W)`` int64 or a
    binary/multilabel mask ``(C, H, W)`` float32. Without ``mask_dir`` items are
    ``(image, name, (H, W))``: the original size lets a prediction crop off the padding.

    Args:
        image_dir: Folder of images.
        mask_dir: Folder of masks matched by name, or ``None``.
        mode: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
        num_classes: Classes (multiclass) or labels (multilabel); 1 for binary.
        in_channels: Channels the model takes (grey images are repeated, colour made grey).
        ignore_index: Mask value left out of loss and metrics.
        transform: An albumentations pipeline (see :func:`build_2d_transforms`).
        seed: Seed of the augmentation: sample ``i`` of epoch ``e`` draws from ``(seed, e, i)``
            (:mod:`mmix_applied.data.seeding`).
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path | None = None,
        *,
        mode: MaskMode = "multiclass",
        num_classes: int,
        in_channels: int = 3,
        ignore_index: int | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        if mode not in SEGMENTATION_MODES:
            raise ValueError(f"mode={mode!r} is not one of {', '.join(SEGMENTATION_MODES)}")
        if num_classes < 1 or (mode == "binary" and num_classes != 1):
            raise ValueError(f"num_classes={num_classes} is invalid for mode={mode!r} (binary uses 1)")
        self.pairs = find_pairs(image_dir, mask_dir)
        self.mode, self.num_classes, self.in_channels = mode, num_classes, in_channels
        self.ignore_index, self.transform = ignore_index, transform
        self._sizes: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def item_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of every image, read from the file headers (nothing is decoded, except a
        file Pillow does not recognise). The data module batches evaluation by these sizes."""
        if self._sizes is None:
            sizes = []
            for image_path, _ in self.pairs:
                header = read_header(image_path)
                if header is None:
                    sizes.append(tuple(_imread(image_path).shape[:2]))
                else:
                    sizes.append((header.height, header.width))
            self._sizes = sizes
        return list(self._sizes)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Read pair ``index`` from disk (no transform), checking that the sizes agree."""
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, in_channels=self.in_channels)
        if mask_path is None:
            return image, None
        mask = read_mask(mask_path, mode=self.mode, num_classes=self.num_classes, ignore_index=self.ignore_index)
        if mask.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"size mismatch: image {image_path.name} is {image.shape[0]}x{image.shape[1]} but mask "
                f"{mask_path.name} is {mask.shape[0]}x{mask.shape[1]} (height x width)"
            )
        return image, mask

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        image, mask = self.load(index)
        size = torch.tensor(image.shape[:2])
        if self.seed_for(self.transform, index) is not None:
            out = self.transform(image=image) if mask is None else self.transform(image=image, mask=mask)
            image, mask = out["image"], out.get("mask")
        x, y = _to_tensors(image, mask, self.mode)
        if y is None:
            return x, self.pairs[index][0].stem, size
        return x, y


class NamedSlices(Dataset):
    """Predict items ``(image, name, (H, W))`` from a dataset of ``(image, mask)`` pairs.

    Args:
        dataset: Items ``(image, mask)``.
        names: One name per item (the predicted mask's file name).
    """

    def __init__(self, dataset: Any, names: list[str]) -> None:
        self.dataset, self.names = dataset, names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, torch.Tensor]:
        image = self.dataset[index][0]
        return image, self.names[index], torch.tensor(image.shape[-2:])
