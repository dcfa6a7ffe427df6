"""The segmentation recipe's data module: the embedded brain default, 2D folders, 3D datalists.

2D batches are ``(image, mask)`` tuples; 3D batches are MONAI dicts ``{"image", "label"}``
(collated by MONAI's ``list_data_collate``, which flattens the patches drawn per volume).
Predict batches: 2D ``(image, name, (H, W))``; 3D ``{"image"}`` with the metadata needed to map a
prediction back to the input's grid. The brain default is ONE template brain: a demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["NamedSlices", "SegmentationDataModule", "nifti_predict_items"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class _VolumeDataset(Dataset):
    """Datalist items through a MONAI pipeline, without MONAI's Dataset wrapping each error in
    ``RuntimeError('applying transform ...')``: a bad file surfaces as the error that names it."""

    def __init__(self, items: list[dict[str, Any]], transform: Any) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.transform(dict(self.items[index]))


class NamedSlices(Dataset):
    """Predict items ``(image, name, (H, W))`` from a dataset of ``(image, mask)`` pairs."""

    def __init__(self, dataset: Any, names: list[str]) -> None:
        self.dataset, self.names = dataset, names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, torch.Tensor]:
        image = self.dataset[index][0]
        return image, self.names[index], torch.tensor(image.shape[-2:])


def nifti_predict_items(source: str | Path, *, key: str = "test", base_dir: str | None = None) -> list[dict[str, str]]:
    """``[{"image": path}]`` from a NIfTI file, a folder of them, or a datalist JSON (``key``).

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If it holds no NIfTI file.
    """
    from mmix_applied.data.segmentation import load_datalist

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"predict input {str(source)!r} does not exist")
    if source.suffix == ".json":
        return [{"image": e["image"]} for e in load_datalist(source, key=key, base_dir=base_dir, require_label=False)]
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    if not files or not all(p.name.endswith(NIFTI_SUFFIXES) for p in files):
        raise ValueError(f"predict input {str(source)!r}: expected a .nii/.nii.gz file, a folder of them or a datalist")
    return [{"image": str(p)} for p in files]


class SegmentationDataModule(pl.LightningDataModule):
    """Train/val/test/predict loaders for the segmentation recipe's ``data`` section.

    Args:
        data: The validated ``data`` section (:class:`mmix_applied.tasks.segmentation.SegmentationData`).
        seed: Seeds the augmentation pipelines.
        predict_input: 2D: an image folder; 3D: a NIfTI file, folder or datalist JSON; ``None``:
            the test split.
    """

    def __init__(self, data: Any, *, seed: int = 0, predict_input: str | None = None) -> None:
        super().__init__()
        self.cfg, self.seed, self.predict_input = data, seed, predict_input
        self.predict_transform: Any = None
        self._datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ datasets
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (``train``, ``val``, ``test`` or ``predict``), built once."""
        if split not in self._datasets:
            d = self.cfg
            build = {"brain": self._brain, "folders": self._folders, "datalist": self._datalist}[d.source]
            self._datasets[split] = build(split)
        return self._datasets[split]

    def _transforms_2d(self, train: bool) -> Any:
        from mmix_applied.data.segmentation import build_2d_transforms

        d = self.cfg
        return build_2d_transforms(train=train, crop_size=d.crop_size, pad_divisor=d.pad_divisor, flip=d.flip,
                                   elastic=d.elastic, intensity=d.intensity, seed=self.seed)

    def _brain(self, split: str) -> Dataset:
        from mmix_applied.data import brain

        d = self.cfg
        source = "test" if split == "predict" else split
        if d.spatial_dims == 2:
            ds = brain.BrainSlices2D(source, resolution=d.resolution, thickness=d.slab_thickness or 6, gap=d.slab_gap,
                                     transform=self._transforms_2d(split == "train"), seed=self.seed)
            return NamedSlices(ds, [f"z{z:03d}" for z in ds.slices]) if split == "predict" else ds
        tf = brain.build_brain_3d_transforms(train=split == "train", patch_size=d.patch_size,
                                             num_samples=d.num_samples, seed=self.seed)
        return brain.BrainSlabs3D(source, resolution=d.resolution, thickness=d.slab_thickness or 12, gap=d.slab_gap,
                                  transform=tf)

    def _folders(self, split: str) -> Dataset:
        from mmix_applied.data.segmentation import SegmentationFolder

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
            raise ValueError(f"data.source=folders needs data.{split}_images and data.{split}_masks (got "
                             f"{images!r}, {masks!r})")
        return SegmentationFolder(images, masks, transform=self._transforms_2d(split == "train"), **kw)

    def _datalist(self, split: str) -> Dataset:
        from mmix_applied.data.segmentation import build_3d_transforms, load_datalist

        d = self.cfg
        if d.datalist is None:
            raise ValueError("data.source=datalist needs data.datalist (a Decathlon-style JSON)")
        common = dict(mode=d.mode, num_classes=d.num_classes, ignore_index=d.ignore_index, pixdim=d.pixdim,
                      orientation=d.orientation, intensity_range=d.intensity_range, seed=self.seed)
        if split == "predict":
            items = nifti_predict_items(self.predict_input or d.datalist, key=d.test_key, base_dir=d.base_dir)
            self.predict_transform = build_3d_transforms(train=False, with_label=False, **common)
            return _VolumeDataset(items, self.predict_transform)
        key = {"train": d.train_key, "val": d.val_key, "test": d.test_key}[split]
        items = load_datalist(d.datalist, key=key, base_dir=d.base_dir)
        tf = build_3d_transforms(train=split == "train", patch_size=d.patch_size, num_samples=d.num_samples,
                                 flip=d.flip, intensity=d.intensity, **common)
        return _VolumeDataset(items, tf)

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        d = self.cfg
        dataset = self.dataset(split)
        batch_size = d.batch_size if split == "train" else (d.eval_batch_size or (1 if d.spatial_dims == 3 else d.batch_size))
        if d.spatial_dims == 3:
            from monai.data import DataLoader as MonaiLoader

            return MonaiLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=d.num_workers,
                               generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=d.num_workers,
                          generator=torch.Generator().manual_seed(self.seed),
                          persistent_workers=d.num_workers > 0 and split == "train")

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("predict", shuffle=False)
