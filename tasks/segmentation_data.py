"""The segmentation recipe's data sets: the embedded brain default, digit canvases, 2D folders, 3D datalists.

Builders only (the data sets themselves live in :mod:`mmix_applied.data`, the loaders in
:class:`mmix_applied.engine.datamodule.DataModule`). 2D batches are ``(image, mask)`` tuples; 3D
batches are MONAI dicts ``{"image", "label"}`` (collated by MONAI's ``list_data_collate``, which
flattens the patches drawn per volume). Predict batches: 2D ``(image, name, (H, W))``; 3D
``{"image"}`` with the metadata needed to map a prediction back to the input's grid. The brain
default is ONE template brain: a demo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmix_applied.data import brain
from mmix_applied.data.digit_canvas import digit_canvas_datasets
from mmix_applied.data.image_files import describe_sizes
from mmix_applied.data.segmentation_2d import NamedSlices, SegmentationFolder, build_2d_transforms
from mmix_applied.data.segmentation_3d import (
    UnlabelledListError,
    VolumeDataset,
    build_3d_transforms,
    datalist_labels,
    load_datalist,
    nifti_predict_items,
)
from mmix_applied.engine.data_summary import SIZE_SAMPLE, DataDescription, SplitDescription
from mmix_applied.errors import ConfigError

__all__ = ["SegmentationDatasets", "datalist_class_names", "describe_segmentation_data"]


class SegmentationDatasets:
    """Builds the data set of each split from the recipe's ``data`` section.

    Args:
        data: The validated ``data`` section (:class:`mmix_applied.tasks.segmentation.SegmentationData`).
        seed: Seeds the augmentation (per sample, from ``(seed, epoch, index)``).
        predict_input: 2D: an image folder; 3D: a NIfTI file, folder or datalist JSON; ``None``:
            the test split.
    """

    def __init__(self, data: Any, *, seed: int = 0, predict_input: str | None = None) -> None:
        self.cfg, self.seed, self.predict_input = data, seed, predict_input
        #: The 3D predict pipeline (to invert a prediction back onto the input's grid).
        self.predict_transform: Any = None

    def __call__(self, split: str) -> Dataset:
        """The data set of ``split`` (``train``, ``val``, ``test`` or ``predict``)."""
        build = {"brain": self._brain, "digit_canvas": self._digit_canvas, "folders": self._folders,
                 "datalist": self._datalist}[self.cfg.source]
        return build(split)

    def _digit_canvas(self, split: str) -> Dataset:
        """MNIST digits on 64 x 64 canvases, glyphs of the splits from disjoint images; predict: the test split."""
        if not hasattr(self, "_canvases"):
            self._canvases = digit_canvas_datasets(seed=self.seed, num_train=self.cfg.num_train)
        if split == "predict":
            test = self._canvases["test"]
            return NamedSlices(test, [f"canvas{i:04d}" for i in range(len(test))])
        return self._canvases[split]

    def _transforms_2d(self, train: bool) -> Any:
        d = self.cfg
        return build_2d_transforms(train=train, crop_size=d.crop_size, pad_divisor=d.pad_divisor, flip=d.flip,
                                   elastic=d.elastic, intensity=d.intensity, seed=self.seed)

    def _brain(self, split: str) -> Dataset:
        d = self.cfg
        source = "test" if split == "predict" else split
        if d.spatial_dims == 2:
            ds = brain.BrainSlices2D(source, resolution=d.resolution, thickness=d.slab_thickness or 6, gap=d.slab_gap,
                                     transform=self._transforms_2d(split == "train"), seed=self.seed)
            return NamedSlices(ds, [f"z{z:03d}" for z in ds.slices]) if split == "predict" else ds
        tf = brain.build_brain_3d_transforms(train=split == "train", patch_size=d.patch_size,
                                             num_samples=d.num_samples, seed=self.seed)
        return brain.BrainSlabs3D(source, resolution=d.resolution, thickness=d.slab_thickness or 12, gap=d.slab_gap,
                                  transform=tf, seed=self.seed)

    def _folders(self, split: str) -> Dataset:
        d = self.cfg
        kw = dict(mode=d.mode, num_classes=d.num_classes, in_channels=d.in_channels, ignore_index=d.ignore_index,
                  seed=self.seed)
        if split == "predict":
            folder = self.predict_input or d.test_images
            if folder is None:
                raise ValueError("predict needs an image folder: pass --input or set data.test_images")
            return SegmentationFolder(folder, None, transform=self._transforms_2d(False), **kw)
        images, masks = getattr(d, f"{split}_images"), getattr(d, f"{split}_masks")
        if images is None or masks is None:
            raise ValueError(f"data.source=folders needs data.{split}_images and data.{split}_masks (received "
                             f"{images!r}, {masks!r})")
        dataset = SegmentationFolder(images, masks, transform=self._transforms_2d(split == "train"), **kw)
        if split == "train" and d.crop_size is None:
            _check_one_training_size(dataset, pad_divisor=d.pad_divisor, folder=images)
        return dataset

    def datalist_items(self, split: str) -> list[dict[str, Any]]:
        """The labelled datalist entries of ``split``; errors name the config key to change.

        Raises:
            ValueError: The split's list is unlabelled (the Decathlon's ``test``): use another key, or ``predict``.
            KeyError: The datalist has no list under the split's key.
        """
        d = self.cfg
        option = {"train": "train_key", "val": "val_key", "test": "test_key"}[split]
        key = getattr(d, option)
        try:
            return load_datalist(d.datalist, key=key, base_dir=d.base_dir)
        except UnlabelledListError as err:
            others = "data.test_key=validation (a labelled list) to test" if split == "test" else f"data.{option}"
            raise ValueError(
                f"config key 'data.{option}': {err}. Set {others}; `mmix-applied predict --checkpoint RUN` "
                f"predicts the unlabelled {key!r} list (data.test_key) and writes one <name>_seg.nii.gz per image"
            ) from None
        except KeyError as err:
            if "has no key" not in str(err):
                raise
            msd = (" (a Medical Segmentation Decathlon dataset.json has only 'training' and an unlabelled 'test': "
                   "move some 'training' pairs into a 'validation' list)" if split == "val" else "")
            raise KeyError(f"config key 'data.{option}': {err.args[0]}; set data.{option} to one of them, or add a "
                           f"{key!r} list to the datalist{msd}") from None

    def _datalist(self, split: str) -> Dataset:
        d = self.cfg
        if d.datalist is None:
            raise ValueError("data.source=datalist needs data.datalist (a Decathlon-style JSON)")
        common = dict(mode=d.mode, num_classes=d.num_classes, ignore_index=d.ignore_index, pixdim=d.pixdim,
                      orientation=d.orientation, intensity_range=d.intensity_range, seed=self.seed)
        if split == "predict":
            items = nifti_predict_items(self.predict_input or d.datalist, key=d.test_key, base_dir=d.base_dir)
            self.predict_transform = build_3d_transforms(train=False, with_label=False, **common)
            return VolumeDataset(items, self.predict_transform, seed=self.seed)
        items = self.datalist_items(split)
        tf = build_3d_transforms(train=split == "train", patch_size=d.patch_size, num_samples=d.num_samples,
                                 flip=d.flip, intensity=d.intensity, **common)
        return VolumeDataset(items, tf, seed=self.seed)


def _check_one_training_size(dataset: SegmentationFolder, *, pad_divisor: int, folder: str) -> None:
    """Training batches stack images (and mixing pairs them): without crops they must share one padded size.

    Raises:
        ConfigError: Naming ``data.crop_size``, the sizes found and a crop that fits them all.
    """
    sizes = dataset.item_sizes()
    padded = sorted({(-(-h // pad_divisor) * pad_divisor, -(-w // pad_divisor) * pad_divisor) for h, w in sizes})
    if len(padded) <= 1:
        return
    low_h, low_w = min(h for h, _ in sizes), min(w for _, w in sizes)
    crop = [max(pad_divisor, low_h // pad_divisor * pad_divisor), max(pad_divisor, low_w // pad_divisor * pad_divisor)]
    raise ConfigError(
        f"config key 'data.crop_size': received null (whole images), but the training images in {folder!r} have "
        f"{len(set(sizes))} sizes ({describe_sizes(sizes)}; height x width) and a training batch needs one size. "
        f"Set data.crop_size: {crop} (random crops; smaller images are padded first), or resize the images to one "
        "size. Validation, test and predict take whole images of any size (batched by size)"
    )


def describe_segmentation_data(datasets: SegmentationDatasets, datamodule: Any, *, class_names: list[str]
                               ) -> DataDescription:
    """The data summary of a segmentation run: each split's source, size and item sizes, the classes."""
    d = datasets.cfg
    splits, notes = [], []
    for split in ("train", "val", "test"):
        try:
            dataset = datamodule.dataset(split)
        except (ValueError, KeyError, FileNotFoundError) as err:
            if split != "test":
                raise
            notes.append(f"test: not available to `test` ({err.args[0] if isinstance(err, KeyError) else err})")
            continue
        splits.append(_describe_split(d, split, dataset))
    if d.spatial_dims == 2:
        crop = f"random {d.crop_size[0]}x{d.crop_size[1]} crops in training, " if d.crop_size else ""
        model_input = f"{crop}whole images in evaluation, padded to a multiple of {d.pad_divisor}"
    else:
        grid = ", ".join(p for p in (f"oriented {d.orientation}" if d.orientation else "",
                                     f"resampled to {'x'.join(f'{v:g}' for v in d.pixdim)} mm" if d.pixdim else
                                     "at the input's spacing") if p)
        model_input = (f"{grid}; patches {'x'.join(map(str, d.patch_size))} in training, whole volumes by "
                       "sliding window in evaluation")
    return DataDescription(splits, classes=class_names, model_input=model_input, notes=notes)


def _describe_split(d: Any, split: str, dataset: Any) -> SplitDescription:
    if d.source == "folders":
        images, masks = getattr(d, f"{split}_images"), getattr(d, f"{split}_masks")
        ids = [f"{img.name}\t{msk.name}" for img, msk in dataset.pairs]
        return SplitDescription(split, len(dataset), f"{images} + {masks}", ids=ids, sizes=dataset.item_sizes())
    if d.source == "datalist":
        key = getattr(d, f"{split}_key")
        root = Path(d.base_dir) if d.base_dir else Path(d.datalist).parent
        ids = [os.path.relpath(str(e["image"]), root) + "\t" + os.path.relpath(str(e.get("label", "")), root)
               for e in dataset.items]
        return SplitDescription(split, len(dataset), f"{d.datalist} [{key!r}]", ids=ids,
                                sizes=_volume_shapes([str(e["image"]) for e in dataset.items]))
    embedded = {"brain": "the embedded MNI152 template (nilearn), axial slabs",
                "digit_canvas": "the embedded MNIST digit canvases"}[d.source]
    return SplitDescription(split, len(dataset), embedded)


def _volume_shapes(files: list[str], limit: int = SIZE_SAMPLE) -> list[tuple[int, ...]]:
    """Voxel shapes from NIfTI headers (nothing decoded) of up to ``limit`` files spread over the list."""
    import nibabel as nib

    picked = files[:: max(1, len(files) // limit)][:limit]
    shapes = []
    for file in picked:
        try:
            shapes.append(tuple(int(v) for v in nib.load(file).shape[:3]))
        except Exception:  # noqa: BLE001 - an unreadable volume is reported by the loader, naming it
            continue
    return shapes


def datalist_class_names(d: Any) -> list[str] | None:
    """Class names from the datalist's ``"labels"`` (a Decathlon ``dataset.json``), for the metric keys and reports.

    Multiclass: one name per class; binary: the foreground's name. ``None`` when the file has no
    labels (or cannot be read here: the loader reports that).

    Raises:
        ConfigError: The labels name another number of classes than ``data.num_classes``.
    """
    labels = datalist_labels(d.datalist)
    if labels is None:
        return None
    names = [labels[k] for k in sorted(labels)]
    if d.mode == "binary" and len(names) == 2:
        return names[1:]
    if d.mode == "multiclass" and sorted(labels) == list(range(len(labels))):
        if len(names) != d.num_classes:
            raise ConfigError(f"config key 'data.num_classes': received {d.num_classes}, but the datalist "
                              f"{d.datalist!r} names {len(names)} classes in its \"labels\" ({labels}); set "
                              f"data.num_classes: {len(names)}")
        return names
    return None
