"""The segmentation recipe's data sets: the embedded brain default, digit canvases, 2D folders, 3D datalists.

Builders only (the data sets themselves live in :mod:`mmix_applied.data`, the loaders in
:class:`mmix_applied.engine.datamodule.DataModule`). 2D batches are ``(image, mask)`` tuples; 3D
batches are MONAI dicts ``{"image", "label"}`` (collated by MONAI's ``list_data_collate``, which
flattens the patches drawn per volume). Predict batches: 2D ``(image, name, (H, W))``; 3D
``{"image"}`` with the metadata needed to map a prediction back to the input's grid. The brain
default is ONE template brain: a demo.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from mmix_applied.data import brain
from mmix_applied.data.digit_canvas import digit_canvas_datasets
from mmix_applied.data.segmentation_2d import NamedSlices, SegmentationFolder, build_2d_transforms
from mmix_applied.data.segmentation_3d import VolumeDataset, build_3d_transforms, load_datalist, nifti_predict_items

__all__ = ["SegmentationDatasets"]


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
        return SegmentationFolder(images, masks, transform=self._transforms_2d(split == "train"), **kw)

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
        key = {"train": d.train_key, "val": d.val_key, "test": d.test_key}[split]
        items = load_datalist(d.datalist, key=key, base_dir=d.base_dir)
        tf = build_3d_transforms(train=split == "train", patch_size=d.patch_size, num_samples=d.num_samples,
                                 flip=d.flip, intensity=d.intensity, **common)
        return VolumeDataset(items, tf, seed=self.seed)
