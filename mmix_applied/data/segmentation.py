"""Segmentation data on the user's own files: 2D image/mask folders and 3D NIfTI datalists.

2D: an image folder and a mask folder whose files are matched by name (stem), read with OpenCV
(PNG, TIFF, JPEG, BMP); masks hold class indices (multiclass), 0/1 or 0/255 (binary) or one 0/1
channel per label (multilabel). Albumentations pipelines transform image and mask together
(intensity, elastic, flip), so a mask always stays aligned with its image.

3D: a Decathlon-style datalist JSON (``{"training": [{"image": ..., "label": ...}], ...}``) of
NIfTI pairs, loaded and transformed with MONAI (orientation, spacing, intensity scaling, random
patch sampling); whole volumes are evaluated with sliding-window inference by the recipe.

Mixing these batches follows Manifold Mixup (Verma et al., ICML 2019): the dense masks become
soft targets in :class:`mmix_applied.adapters.Segmentation`; nothing here mixes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

__all__ = [
    "IMAGE_SUFFIXES",
    "MaskMode",
    "SegmentationFolder",
    "build_2d_transforms",
    "build_3d_transforms",
    "check_mask_values",
    "find_pairs",
    "load_datalist",
    "read_image",
    "read_mask",
]

MaskMode = Literal["binary", "multiclass", "multilabel"]
MASK_MODES = ("binary", "multiclass", "multilabel")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


# --------------------------------------------------------------------------- 2D files
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


def _imread(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"cannot read {str(path)!r}: not an image OpenCV can decode (PNG, TIFF, JPEG, BMP)")
    return array


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


def check_mask_values(
    mask: np.ndarray, *, mode: MaskMode, num_classes: int, ignore_index: int | None = None, source: str = "mask"
) -> None:
    """Raise ``ValueError`` if ``mask`` holds values its mode does not allow.

    multiclass: integers in ``[0, num_classes)``; binary and multilabel: 0 or 1; ``ignore_index``
    is allowed everywhere.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode {mode!r} is not one of {MASK_MODES}")
    values = np.unique(mask)
    if ignore_index is not None:
        values = values[values != ignore_index]
    valid = range(num_classes) if mode == "multiclass" else (0, 1)
    bad = [int(v) if float(v).is_integer() else v for v in values.tolist() if v not in valid or float(v) != int(v)]
    if bad:
        allowed = f"0..{num_classes - 1}" if mode == "multiclass" else "0 and 1"
        hint = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"{source} has values {bad[:8]} outside the {mode} range ({allowed}{hint}); check num_classes, "
            "the mask mode, or set data.ignore_index for 'unlabelled' pixels"
        )


def read_mask(
    path: str | Path, *, mode: MaskMode, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Read a mask: ``(H, W)`` int64 class indices (multiclass), ``(H, W, 1)`` (binary) or
    ``(H, W, C)`` (multilabel) with values 0/1. Binary and multilabel masks saved as 0/255 are
    read as 0/1 (unless 255 is the ``ignore_index``).

    Raises:
        ValueError: If the file cannot be decoded, has the wrong number of channels, or holds
            values out of range (see :func:`check_mask_values`).
    """
    path = Path(path)
    mask = _imread(path)
    if mask.ndim == 3 and mode != "multilabel":
        if not all(np.array_equal(mask[:, :, 0], mask[:, :, c]) for c in range(1, mask.shape[2])):
            raise ValueError(
                f"mask {str(path)!r} has {mask.shape[2]} different channels; {mode} masks are one-channel "
                "images of class indices (use mode='multilabel' for one channel per label)"
            )
        mask = mask[:, :, 0]
    if mode != "multiclass" and ignore_index != 255 and mask.max(initial=0) == 255:
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


class SegmentationFolder(Dataset):
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
        seed: Reseeds ``transform`` per DataLoader worker, so workers draw different augmentations.
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
        if mode not in MASK_MODES:
            raise ValueError(f"mode={mode!r} is not one of {MASK_MODES}")
        if num_classes < 1 or (mode == "binary" and num_classes != 1):
            raise ValueError(f"num_classes={num_classes} is invalid for mode={mode!r} (binary uses 1)")
        self.pairs = find_pairs(image_dir, mask_dir)
        self.mode, self.num_classes, self.in_channels = mode, num_classes, in_channels
        self.ignore_index, self.transform, self.seed = ignore_index, transform, seed
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def _reseed_for_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None or self.seed is None or self._worker_seed == info.seed:
            return
        self._worker_seed = info.seed
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed((self.seed + info.seed) % 2**32)

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
        self._reseed_for_worker()
        image, mask = self.load(index)
        size = torch.tensor(image.shape[:2])
        if self.transform is not None:
            out = self.transform(image=image) if mask is None else self.transform(image=image, mask=mask)
            image, mask = out["image"], out.get("mask")
        x, y = _to_tensors(image, mask, self.mode)
        if y is None:
            return x, self.pairs[index][0].stem, size
        return x, y


# --------------------------------------------------------------------------- 3D volumes
def load_datalist(
    path: str | Path, *, key: str = "training", base_dir: str | Path | None = None, require_label: bool = True
) -> list[dict[str, str]]:
    """Read a Decathlon-style datalist JSON (paths relative to ``base_dir``, default its folder).

    Raises:
        FileNotFoundError: If the JSON or a file it names does not exist.
        KeyError: If ``key`` is missing (the message lists the keys present).
        ValueError: If an entry lacks ``"image"`` (or ``"label"`` when ``require_label``).
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist {str(path)!r} does not exist")
    try:
        with path.open(encoding="utf-8") as fh:
            content = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"datalist {str(path)!r} is not valid JSON ({err}); a Decathlon datalist looks like "
                         '{"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}]}') from err
    if not isinstance(content, dict) or key not in content:
        present = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise KeyError(f"datalist {str(path)!r} has no key {key!r}; keys present: {present}")
    if not isinstance(content[key], list) or not content[key]:
        raise ValueError(f"datalist {str(path)!r} has no entries under {key!r}; list the image/label pairs there, "
                         "or name another key")
    for i, entry in enumerate(content[key]):
        entry = entry if isinstance(entry, dict) else {"image": entry}
        needed = ("image", "label") if require_label else ("image",)
        missing = [k for k in needed if k not in entry]
        if missing:
            raise ValueError(f"datalist {str(path)!r} entry {i} of {key!r} lacks {missing}: {entry}")
    items = load_decathlon_datalist(path, is_segmentation=require_label, data_list_key=key,
                                    base_dir=base_dir if base_dir is not None else path.parent)
    absent = [f for item in items for k in ("image", "label") if k in item for f in [item[k]] if not Path(f).exists()]
    if absent:
        raise FileNotFoundError(f"datalist {str(path)!r} names {len(absent)} missing file(s), e.g. {absent[:3]}")
    return items


def _source(value: Any, default: str) -> str:
    return str(getattr(value, "meta", {}).get("filename_or_obj", default))


class _CheckLabeld:
    """MONAI-style dict transform: finite image voxels, image and label of one size, and mask
    values that fit the mode (see :func:`check_mask_values`)."""

    def __init__(self, *, mode: MaskMode, num_classes: int, ignore_index: int | None) -> None:
        self.mode, self.num_classes, self.ignore_index = mode, num_classes, ignore_index

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        image = data.get("image")
        if isinstance(image, torch.Tensor) and not bool(torch.isfinite(image).all()):
            raise ValueError(f"image {_source(image, 'image')!r} holds NaN/Inf voxels; fix the volume (e.g. "
                             "np.nan_to_num before saving) so that training does not stop later on a NaN loss")
        label = data.get("label")
        if isinstance(image, torch.Tensor) and isinstance(label, torch.Tensor) and image.shape[1:] != label.shape[1:]:
            raise ValueError(f"image {_source(image, 'image')!r} has spatial size {tuple(image.shape[1:])} but label "
                             f"{_source(label, 'label')!r} has {tuple(label.shape[1:])}; they must cover the same "
                             "voxel grid (resample the label onto the image with nearest-neighbour interpolation)")
        if "label" in data:
            label = data["label"]
            source = getattr(label, "meta", {}).get("filename_or_obj", "label")
            array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            check_mask_values(array, mode=self.mode, num_classes=self.num_classes,
                              ignore_index=self.ignore_index, source=f"label {source!r}")
        return data


def _readable(err: RuntimeError, data: Any) -> Exception:
    """MONAI wraps every transform error in ``RuntimeError('applying transform <...>')``: return the
    innermost error, itself when it names a file (our checks do), else a ValueError naming the files."""
    inner: BaseException = err
    while inner.__cause__ is not None:
        inner = inner.__cause__
    files = [str(v) for k, v in (data.items() if isinstance(data, dict) else []) if isinstance(v, (str, Path))]
    if isinstance(inner, (ValueError, FileNotFoundError, KeyError)) and any(f in str(inner) for f in files):
        return inner
    return ValueError(f"cannot load {' / '.join(map(repr, files)) or 'the item'}: {type(inner).__name__}: {inner}. "
                      "Check that each file is a complete, readable NIfTI volume (re-export or copy it again).")


def _compose_class() -> type:
    from monai.transforms import Compose

    class _Compose(Compose):
        """MONAI's Compose, raising the readable error of a failed item instead of MONAI's wrapper."""

        def __call__(self, data: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().__call__(data, *args, **kwargs)
            except RuntimeError as err:
                if not str(err).startswith("applying transform"):
                    raise
                raise _readable(err, data) from err

    return _Compose


def _Compose(steps: list[Any]) -> Any:  # noqa: N802 - builds the Compose subclass on first use (MONAI is slow to import)
    return _compose_class()(steps)


def build_3d_transforms(
    *,
    train: bool,
    mode: MaskMode = "multiclass",
    num_classes: int,
    ignore_index: int | None = None,
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
    intensity_range: Sequence[float] | None = None,
    patch_size: Sequence[int] = (64, 64, 64),
    num_samples: int = 2,
    flip: bool = True,
    intensity: bool = True,
    with_label: bool = True,
    seed: int | None = None,
) -> Any:
    """MONAI dict pipeline for NIfTI pairs ``{"image": path, "label": path}``.

    Load (channel first) -> check label values -> orient (``orientation``) -> resample to
    ``pixdim`` (bilinear image, nearest label) -> scale intensity (``intensity_range = (a_min,
    a_max)`` clipped to [0, 1], else z-score over non-zero voxels) -> for training: ``num_samples``
    random patches of ``patch_size`` centred on foreground or background with equal chance, random
    flips on each axis, random intensity scale and shift. Every step is invertible, so a prediction
    maps back to the input's grid (the recipe uses MONAI's ``Invertd``).

    Args:
        train: Build the random training pipeline (else the deterministic evaluation one).
        with_label: Whether items carry ``"label"`` (predict pipelines have only ``"image"``).
        seed: Seed of the pipeline's own random state (``Compose.set_random_state``).
    """
    from monai import transforms as T

    keys = ["image", "label"] if with_label else ["image"]
    steps: list[Any] = [T.LoadImaged(keys=keys, ensure_channel_first=True, image_only=True),
                        _CheckLabeld(mode=mode, num_classes=num_classes, ignore_index=ignore_index)]
    if orientation:
        steps.append(T.Orientationd(keys=keys, axcodes=orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if pixdim is not None:
        steps.append(T.Spacingd(keys=keys, pixdim=tuple(pixdim), mode=["bilinear", "nearest"][: len(keys)]))
    if intensity_range is not None:
        if len(intensity_range) != 2:
            raise ValueError(f"intensity_range must be (a_min, a_max), got {intensity_range}")
        a_min, a_max = (float(v) for v in intensity_range)
        steps.append(T.ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True))
    else:
        steps.append(T.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    if train and with_label:
        steps += [T.SpatialPadd(keys=keys, spatial_size=tuple(patch_size)),
                  T.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=tuple(patch_size),
                                           pos=1.0, neg=1.0, num_samples=num_samples)]
        if flip:
            steps += [T.RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
        if intensity:
            steps += [T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
                      T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5)]
    compose = _Compose(steps)
    if seed is not None:
        compose.set_random_state(seed=seed)
    return compose
