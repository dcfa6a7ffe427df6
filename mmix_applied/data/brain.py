"""Embedded brain-tissue segmentation data from the MNI152 2009 template shipped in nilearn.

Nothing is downloaded: ``nilearn.datasets.load_mni152_template``, ``load_mni152_gm_template``,
``load_mni152_wm_template`` and ``load_mni152_brain_mask`` read NIfTI files inside the nilearn
package (the ICBM 2009a nonlinear symmetric template, skull-stripped, rescaled to [0, 1]) and
resample them to 1 mm (197 x 233 x 189) or 2 mm (99 x 117 x 95).

Four tissue classes per voxel (:data:`TISSUE_CLASSES`), derived deterministically:

* outside the brain mask (T1 > 0.2, nilearn's default threshold): 0 background;
* inside it: the argmax of (CSF, GM, WM) probabilities, with the template's GM and WM
  probability maps and CSF = ``clip(1 - GM - WM, 0, 1)`` — so CSF is brain-mask tissue where
  grey and white matter are both low (ventricles, sulci, the cisterns).

Train, validation and test come from disjoint axial slabs (:func:`brain_slabs`), with ``gap``
slices dropped on each side of every held-out slab so neighbouring slices do not leak. 2D items
are axial slices, 3D items are whole slabs (training samples random patches from them).

This is ONE template brain, an average of 152 subjects: a demo that the recipe runs and what
mixing changes, not a benchmark of generalisation to new subjects or scanners.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmix_applied.data.seeding import SeededAugmentation

__all__ = [
    "SPLITS",
    "TISSUE_CLASSES",
    "BrainSlabs3D",
    "BrainSlices2D",
    "BrainVolumes",
    "brain_slabs",
    "build_brain_3d_transforms",
    "load_brain_volumes",
]

TISSUE_CLASSES = ("background", "CSF", "grey matter", "white matter")
SPLITS = ("train", "val", "test")
#: Default slab pattern, repeated from the bottom of the brain upwards.
DEFAULT_PATTERN = ("train", "train", "val", "train", "test")


@dataclass(frozen=True)
class BrainVolumes:
    """The template cropped to the brain: T1 ``image`` in [0, 1] and tissue ``labels``, both
    ``(X, Y, Z)`` in RAS voxel order, with the ``affine`` of the crop (voxel -> MNI mm)."""

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    resolution: int


def _nilearn_datasets() -> Any:
    try:
        from nilearn import datasets
    except ImportError as err:  # pragma: no cover - nilearn is in the [data] extra
        raise ImportError(
            "the embedded brain data needs nilearn (it ships the MNI152 template): "
            "pip install 'mmix-applied[data]'"
        ) from err
    return datasets


@functools.lru_cache(maxsize=2)
def load_brain_volumes(resolution: int = 2, *, divisor: int = 16) -> BrainVolumes:
    """Load the template and derive tissue labels (see the module docstring), cached.

    The volume is cropped in-plane (X, Y) to the brain's bounding box, grown to a multiple of
    ``divisor`` so encoder–decoders accept every slice; Z keeps every slice.

    Args:
        resolution: 1 or 2 (mm).
        divisor: In-plane sizes become multiples of this.

    Raises:
        ValueError: For another resolution.
    """
    if resolution not in (1, 2):
        raise ValueError(f"resolution={resolution!r}: the embedded template exists at 1 or 2 (mm)")
    datasets = _nilearn_datasets()
    t1_img = datasets.load_mni152_template(resolution=resolution)
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=resolution).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=resolution).get_fdata(), dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).get_fdata()) > 0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    tissue = np.stack([csf, gm, wm]).argmax(0).astype(np.uint8) + 1
    labels = np.where(brain, tissue, 0).astype(np.uint8)
    image = np.clip(t1, 0.0, 1.0)

    starts, stops = [], []
    where = np.argwhere(brain)
    for axis in (0, 1):
        lo, hi = int(where[:, axis].min()), int(where[:, axis].max()) + 1
        size = -(-(hi - lo) // divisor) * divisor
        start = lo - (size - (hi - lo)) // 2
        starts.append(start)
        stops.append(start + size)
    pad = [(max(0, -a), max(0, b - n)) for a, b, n in zip(starts, stops, image.shape[:2])] + [(0, 0)]
    image, labels = np.pad(image, pad), np.pad(labels, pad)
    sl = tuple(slice(a + p[0], b + p[0]) for a, b, p in zip(starts, stops, pad[:2]))
    shift = np.eye(4)
    shift[:2, 3] = starts
    return BrainVolumes(image=np.ascontiguousarray(image[sl]), labels=np.ascontiguousarray(labels[sl]),
                        affine=np.asarray(t1_img.affine) @ shift, resolution=resolution)


def brain_slabs(
    labels: np.ndarray,
    *,
    thickness: int,
    gap: int = 1,
    pattern: Sequence[str] = DEFAULT_PATTERN,
    min_brain_fraction: float = 0.1,
) -> dict[str, list[tuple[int, int]]]:
    """Split the axial (Z) range of the brain into disjoint slabs ``[start, stop)`` per split.

    Slices whose brain area is below ``min_brain_fraction`` of the largest are left out; the rest
    is cut into consecutive slabs of ``thickness`` slices assigned in turn by ``pattern``; each
    held-out (val/test) slab loses ``gap`` slices at each end, so every training slice is more
    than ``gap`` slices from every held-out one.

    Raises:
        ValueError: If the pattern names an unknown split or a split ends up empty.
    """
    bad = sorted(set(pattern) - set(SPLITS))
    if bad or thickness < 1 or gap < 0:
        raise ValueError(f"pattern entries must be in {SPLITS} (received {bad}), thickness >= 1, gap >= 0")
    area = (labels > 0).sum(axis=(0, 1))
    z = np.flatnonzero(area >= min_brain_fraction * area.max())
    lo, hi = int(z[0]), int(z[-1]) + 1
    slabs: dict[str, list[tuple[int, int]]] = {s: [] for s in SPLITS}
    for i, start in enumerate(range(lo, hi, thickness)):
        split = pattern[i % len(pattern)]
        stop = min(start + thickness, hi)
        if split != "train":
            start, stop = start + gap, stop - gap
        if stop > start:
            slabs[split].append((start, stop))
    empty = [s for s in SPLITS if not slabs[s]]
    if empty:
        raise ValueError(f"split(s) {empty} got no slab: use a smaller thickness ({thickness}) or gap ({gap})")
    return slabs


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")


class BrainSlices2D(SeededAugmentation):
    """Axial slices of one split as ``(image (1, H, W) float32, labels (H, W) int64)``.

    Slices are shown anterior at the top, the subject's left/right along the width, so a
    horizontal flip is a left–right flip. ONE template brain: a demo, not a benchmark.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        resolution: 1 or 2 (mm).
        thickness: Slab thickness in slices (see :func:`brain_slabs`).
        gap: Slices dropped on each side of held-out slabs.
        transform: Albumentations pipeline on ``image=`` (H, W, 1) and ``mask=``
            (:func:`mmix_applied.data.segmentation.build_2d_transforms`).
        seed: Seed of the augmentation, drawn per sample from ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        split: str,
        *,
        resolution: int = 2,
        thickness: int = 6,
        gap: int = 1,
        transform: Callable[..., dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        _check_split(split)
        vol = load_brain_volumes(resolution)
        self.slabs = brain_slabs(vol.labels, thickness=thickness, gap=gap)[split]
        self.slices = [z for a, b in self.slabs for z in range(a, b)]
        self.volumes, self.transform = vol, transform

    def __len__(self) -> int:
        return len(self.slices)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``index`` without transform: image ``(H, W)`` float32 and labels ``(H, W)`` int64."""
        z = self.slices[index]
        image = self.volumes.image[:, :, z].T[::-1]
        labels = self.volumes.labels[:, :, z].T[::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(labels).astype(np.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.raw(index)
        image = image[:, :, None]
        if self.seed_for(self.transform, index) is not None:
            out = self.transform(image=image, mask=labels)
            image, labels = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1))).float()
        return x, torch.from_numpy(np.ascontiguousarray(labels)).long()


def build_brain_3d_transforms(
    *, train: bool, patch_size: Sequence[int] = (48, 48, 8), num_samples: int = 2, seed: int | None = None
) -> Any:
    """MONAI dict pipeline for :class:`BrainSlabs3D` items: training samples ``num_samples``
    patches (foreground/background centred), elastic deformation, flips and intensity changes;
    evaluation passes whole slabs."""
    from monai import transforms as T

    keys = ["image", "label"]
    steps: list[Any] = [T.EnsureTyped(keys=keys, track_meta=True)]
    if train:
        steps += [
            T.SpatialPadd(keys=keys, spatial_size=tuple(patch_size)),
            T.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=tuple(patch_size),
                                     pos=1.0, neg=1.0, num_samples=num_samples),
            T.Rand3DElasticd(keys=keys, sigma_range=(5, 7), magnitude_range=(20, 40), prob=0.2,
                             mode=["bilinear", "nearest"], padding_mode="zeros"),
            T.RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            T.RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        ]
    compose = T.Compose(steps)
    if seed is not None:
        compose.set_random_state(seed=seed)
    return compose


class BrainSlabs3D(SeededAugmentation):
    """Axial slabs of one split as MONAI dicts ``{"image": (1, X, Y, Z), "label": (1, X, Y, Z)}``
    (MetaTensors carrying each slab's affine), transformed by ``transform`` (for training,
    :func:`build_brain_3d_transforms` returns a list of patches per slab). ONE template brain.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        resolution: 1 or 2 (mm).
        thickness: Slab thickness in slices; at least the patch depth.
        gap: Slices dropped on each side of held-out slabs.
        transform: A MONAI dict transform.
        seed: Seed of the augmentation, drawn per sample from ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        split: str,
        *,
        resolution: int = 2,
        thickness: int = 12,
        gap: int = 1,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(seed=seed)
        _check_split(split)
        self.volumes = load_brain_volumes(resolution)
        self.slabs = brain_slabs(self.volumes.labels, thickness=thickness, gap=gap)[split]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.slabs)

    def __getitem__(self, index: int) -> Any:
        from monai.data import MetaTensor

        start, stop = self.slabs[index]
        shift = np.eye(4)
        shift[2, 3] = start
        affine = torch.as_tensor(self.volumes.affine @ shift, dtype=torch.float64)
        meta = {"filename_or_obj": f"mni152_{self.volumes.resolution}mm_z{start}-{stop}"}
        item = {
            "image": MetaTensor(torch.from_numpy(self.volumes.image[None, :, :, start:stop].copy()),
                                affine=affine, meta=dict(meta)),
            "label": MetaTensor(torch.from_numpy(self.volumes.labels[None, :, :, start:stop].astype(np.float32)),
                                affine=affine, meta=dict(meta)),
        }
        return self.seed_for(self.transform, index)(item) if self.transform is not None else item

