"""3D segmentation data: Decathlon-style NIfTI datalists, loaded and transformed with MONAI.

A datalist JSON (``{"training": [{"image": ..., "label": ...}], ...}``) of NIfTI pairs goes
through a MONAI pipeline (orientation, spacing, intensity scaling, random patch sampling);
whole volumes are evaluated with sliding-window inference
(:class:`mmix_applied.models.sliding_window.SlidingWindowNet`). MONAI itself is imported only
when a datalist is read or a pipeline is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmix_applied.data.constants import NIFTI_SUFFIXES
from mmix_applied.data.masks import MaskMode, check_mask_values
from mmix_applied.data.seeding import SeededAugmentation
from mmix_applied.errors import MmixError

__all__ = ["UnlabelledListError", "VolumeDataset", "build_3d_transforms", "datalist_labels", "invert_prediction",
           "load_datalist", "nifti_predict_items"]


def load_datalist(
    path: str | Path, *, key: str = "training", base_dir: str | Path | None = None, require_label: bool = True
) -> list[dict[str, str]]:
    """Read a Decathlon-style datalist JSON (paths relative to ``base_dir``, default its folder).

    Raises:
        FileNotFoundError: If the JSON or a file it names does not exist.
        KeyError: If ``key`` is missing (the message lists the keys present).
        UnlabelledListError: (a ValueError) ``require_label`` and the list has no labels at all.
        ValueError: If an entry lacks ``"image"`` (or ``"label"`` when ``require_label``).
        TypeError: If an entry's ``"image"`` or ``"label"`` is not a path (a string or a list of them).
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
    if require_label:
        bare = [i for i, e in enumerate(content[key]) if not isinstance(e, dict) or "label" not in e]
        if bare and len(bare) == len(content[key]):
            raise UnlabelledListError(
                f"datalist {str(path)!r}: the {key!r} list has no labels ({len(bare)} image(s) without \"label\", as "
                "the Medical Segmentation Decathlon's dataset.json lists its test images); measuring needs "
                "image/label pairs: name a labelled list instead, and predict the unlabelled one", key=key,
                count=len(bare))
    for i, entry in enumerate(content[key]):
        entry = entry if isinstance(entry, dict) else {"image": entry}
        needed = ("image", "label") if require_label else ("image",)
        missing = [k for k in needed if k not in entry]
        if missing:
            raise ValueError(f"datalist {str(path)!r} entry {i} of {key!r} lacks {missing}: {entry}")
        for k in ("image", "label"):
            value = entry.get(k)
            paths = value if isinstance(value, list) and value else [value]
            if k in entry and not all(isinstance(p, str) and p for p in paths):
                raise TypeError(f"datalist {str(path)!r} entry {i} of {key!r}: {k!r} must be a file path (a "
                                f"non-empty string, or a list of them for several channels), received "
                                f"{type(value).__name__} {value!r}; e.g. \"{k}\": \"{k}sTr/case_001.nii.gz\"")
    items = load_decathlon_datalist(path, is_segmentation=require_label, data_list_key=key,
                                    base_dir=base_dir if base_dir is not None else path.parent)
    absent = [f for item in items for k in ("image", "label") if k in item for f in [item[k]] if not Path(f).exists()]
    if absent:
        raise FileNotFoundError(f"datalist {str(path)!r} names {len(absent)} missing file(s), e.g. {absent[:3]}")
    return items


class UnlabelledListError(MmixError, ValueError):
    """A datalist key lists images without labels (the Decathlon's ``test`` list) where labels are needed.

    Attributes:
        key: The datalist key.
        count: Its entries.
    """

    def __init__(self, message: str, *, key: str, count: int) -> None:
        super().__init__(message)
        self.key, self.count = key, count


def datalist_labels(path: str | Path) -> dict[int, str] | None:
    """The class names of a Decathlon ``dataset.json`` (its ``"labels"``: ``{"0": "background", ...}``),
    by class index; ``None`` when the file is unreadable or has no such mapping."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
        labels = content.get("labels") if isinstance(content, dict) else None
        if not isinstance(labels, dict) or not labels:
            return None
        return {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


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
        seed: Seed of the pipeline's own random state (``Compose.set_random_state``); a
            :class:`VolumeDataset` reseeds it per sample.
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
            raise ValueError(f"intensity_range must be (a_min, a_max), received {intensity_range}")
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


class VolumeDataset(SeededAugmentation):
    """Datalist items through a MONAI pipeline, seeded per sample from ``(seed, epoch, index)``.

    Unlike MONAI's ``Dataset`` it does not wrap each error in ``RuntimeError('applying transform
    ...')``: a bad file surfaces as the error that names it.

    Args:
        items: Datalist entries (``{"image": path, "label": path}``).
        transform: The MONAI pipeline (see :func:`build_3d_transforms`).
        seed: Seed of the augmentation.
    """

    def __init__(self, items: list[dict[str, Any]], transform: Any, *, seed: int | None = 0) -> None:
        super().__init__(seed=seed)
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.seed_for(self.transform, index)(dict(self.items[index]))


def nifti_predict_items(source: str | Path, *, key: str = "test", base_dir: str | None = None) -> list[dict[str, str]]:
    """``[{"image": path}]`` from a NIfTI file, a folder of them, or a datalist JSON (``key``).

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If it holds no NIfTI file.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"predict input {str(source)!r} does not exist")
    if source.suffix == ".json":
        return [{"image": e["image"]} for e in load_datalist(source, key=key, base_dir=base_dir, require_label=False)]
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    if not files or not all(p.name.endswith(NIFTI_SUFFIXES) for p in files):
        raise ValueError(f"predict input {str(source)!r}: expected a .nii/.nii.gz file, a folder of them or a datalist")
    return [{"image": str(p)} for p in files]


def invert_prediction(item: dict[str, Any], transform: Any) -> Any:
    """Map ``item["pred"]`` back onto the voxel grid of ``item["image"]`` (undo orientation and spacing).

    Args:
        item: One decollated predict item: ``"image"`` (a MetaTensor that went through ``transform``)
            and ``"pred"`` (the network's output on that grid).
        transform: The predict pipeline (:func:`build_3d_transforms` with ``with_label=False``), or
            ``None`` when the image was not transformed.

    Returns:
        The prediction as a MetaTensor on the input's grid, with the input's affine.
    """
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    image = item["image"]
    item["pred"] = MetaTensor(item["pred"], meta=dict(image.meta))  # meta holds the affine
    if transform is None or not getattr(image, "applied_operations", None):
        return item["pred"]
    inverted = Invertd(keys="pred", transform=transform, orig_keys="image", nearest_interp=False)(item)
    return inverted["pred"]
