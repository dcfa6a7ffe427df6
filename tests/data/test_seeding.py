"""The one augmentation rule: a sample's draw is a function of (seed, epoch, index) alone, for
every augmenting data set (the property exact resume rests on)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mmix_applied.data.images import ArrayImageDataset, build_transforms
from mmix_applied.data.seeding import SeededAugmentation, augmentation_seed
from mmix_applied.data.segmentation_2d import SegmentationFolder, build_2d_transforms


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    for kind in ("img", "msk"):
        (tmp_path / kind).mkdir()
    for i in range(3):
        mask = np.zeros((20, 20), np.uint8)
        mask[4:14, 3 + i:12 + i] = 1
        cv2.imwrite(str(tmp_path / "img" / f"a{i}.png"), (mask * 120 + rng.integers(0, 90, mask.shape)).astype(np.uint8))
        cv2.imwrite(str(tmp_path / "msk" / f"a{i}.png"), mask)
    return SegmentationFolder(tmp_path / "img", tmp_path / "msk", mode="multiclass", num_classes=2, in_channels=1,
                              transform=build_2d_transforms(train=True, crop_size=[12, 12], pad_divisor=4, seed=0),
                              seed=7)


def _arrays(tmp_path):
    images = np.random.default_rng(1).integers(0, 255, (3, 20, 20), dtype=np.uint8)
    return ArrayImageDataset(images, np.arange(3), transform=build_transforms(image_size=16, train=True,
                                                                              augment="standard", channels=1), seed=7)


@pytest.mark.parametrize("build", [_folder, _arrays], ids=["segmentation-folder", "image-arrays"])
def test_a_sample_depends_on_seed_epoch_and_index_only(tmp_path, build):
    ds = build(tmp_path)
    assert isinstance(ds, SeededAugmentation)
    first = ds[1][0]
    for other in (2, 0, 2):  # other samples drawn in between (another order, another worker)
        ds[other]
    assert torch.equal(ds[1][0], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], first)
    ds.set_epoch(0)
    assert torch.equal(ds[1][0], first)


def test_the_seed_is_a_function_of_the_triple():
    assert augmentation_seed(1, 2, 3) == augmentation_seed(1, 2, 3)
    assert len({augmentation_seed(1, 2, 3), augmentation_seed(1, 3, 2), augmentation_seed(2, 2, 3),
                augmentation_seed(1, 2, 4)}) == 4
