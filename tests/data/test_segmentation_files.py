"""Segmentation data on own files: 2D folders (PNG/TIFF) and 3D NIfTI datalists, and their errors."""

import json

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

from mmix_applied.data.segmentation import (
    SegmentationFolder,
    build_2d_transforms,
    build_3d_transforms,
    find_pairs,
    load_datalist,
    read_image,
    read_mask,
)


def write_pairs(root, n=3, size=(20, 28), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    (root / "img").mkdir()
    (root / "msk").mkdir()
    masks = {}
    for i in range(n):
        mask = rng.integers(0, classes, size).astype(np.uint8)
        image = np.stack([mask * 60, mask * 30, 255 - mask * 50], axis=-1).astype(np.uint8)  # RGB
        cv2.imwrite(str(root / "img" / f"case{i}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "msk" / f"case{i}.png"), mask)
        masks[f"case{i}"] = mask
    return root / "img", root / "msk", masks


def test_folder_pairs_read_exactly(tmp_path):
    img, msk, masks = write_pairs(tmp_path)
    ds = SegmentationFolder(img, msk, num_classes=3, in_channels=3)
    assert len(ds) == 3
    x, y = ds[1]
    assert x.shape == (3, 20, 28) and y.dtype == torch.int64
    assert torch.equal(y, torch.from_numpy(masks["case1"]).long())
    assert torch.allclose(x[0], y.float() * 60 / 255)  # RGB order restored, scaled by dtype max
    grey = read_image(img / "case0.png", in_channels=1)
    assert grey.shape == (20, 28, 1)
    names = [p[0].stem for p in find_pairs(img)]
    assert names == ["case0", "case1", "case2"]
    pred = SegmentationFolder(img, None, num_classes=3, transform=build_2d_transforms(train=False, pad_divisor=32))
    x, name, size = pred[0]
    assert x.shape == (3, 32, 32) and name == "case0" and size.tolist() == [20, 28]


def test_tiff_16bit_binary_and_multilabel(tmp_path):
    image = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    cv2.imwrite(str(tmp_path / "a.tif"), image)
    assert np.allclose(read_image(tmp_path / "a.tif", in_channels=1)[:, :, 0], image / 65535.0)
    binary = np.array([[0, 255], [255, 0]], np.uint8)
    cv2.imwrite(str(tmp_path / "b.png"), binary)
    assert read_mask(tmp_path / "b.png", mode="binary", num_classes=1)[:, :, 0].tolist() == [[0, 1], [1, 0]]
    labels = np.zeros((2, 2, 3), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 2] = labels[0, 1, 1] = 1  # RGB: label c in channel c
    cv2.imwrite(str(tmp_path / "m.png"), labels[:, :, ::-1] * 255)
    assert np.array_equal(read_mask(tmp_path / "m.png", mode="multilabel", num_classes=3), labels)
    ignore = np.array([[0, 255], [2, 1]], np.uint8)
    cv2.imwrite(str(tmp_path / "i.png"), ignore)
    assert read_mask(tmp_path / "i.png", mode="multiclass", num_classes=3, ignore_index=255).tolist() == ignore.tolist()


def test_train_pipeline_moves_image_and_mask_together(tmp_path):
    img, msk, _ = write_pairs(tmp_path, n=2, size=(40, 40), classes=4)
    tf = build_2d_transforms(train=True, crop_size=(24, 24), elastic=False, intensity=False, seed=0)
    ds = SegmentationFolder(img, msk, num_classes=4, transform=tf, seed=0)
    for i in range(2):
        x, y = ds[i]
        assert y.shape == (32, 32)  # 24 crop padded to the divisor
        assert torch.allclose(x[0] * 255 / 60, y.float(), atol=1e-4)  # image encodes the mask


def test_elastic_pipeline_keeps_mask_values(tmp_path):
    img, msk, _ = write_pairs(tmp_path, n=1, size=(32, 32), classes=3)
    tf = build_2d_transforms(train=True, seed=1)
    ds = SegmentationFolder(img, msk, num_classes=3, transform=tf)
    for _ in range(4):
        _, y = ds[0]
        assert set(y.unique().tolist()) <= {0, 1, 2}


def test_errors_say_what_is_wrong(tmp_path):
    img, msk, _ = write_pairs(tmp_path, n=2, classes=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_pairs(tmp_path / "nope", msk)
    cv2.imwrite(str(msk / "stray.png"), np.zeros((20, 28), np.uint8))
    with pytest.raises(ValueError, match="do not match.*stray"):
        find_pairs(img, msk)
    (msk / "stray.png").unlink()
    with pytest.raises(ValueError, match=r"values \[2\] outside the multiclass range \(0..1"):
        SegmentationFolder(img, msk, num_classes=2)[0]
    cv2.imwrite(str(msk / "case0.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="size mismatch.*20x28.*10x10"):
        SegmentationFolder(img, msk, num_classes=3)[0]
    (img / "case1.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        SegmentationFolder(img, msk, num_classes=3)[1]
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (1, 2, 0)
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    with pytest.raises(ValueError, match="different channels"):
        read_mask(tmp_path / "c.png", mode="multiclass", num_classes=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no files"):
        find_pairs(tmp_path / "empty")


def write_volume(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.fixture()
def datalist(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])  # LAS, 2 x 2 x 3 mm
    affine[:3, 3] = (10, -20, 5)
    entries = []
    for i in range(2):
        label = np.zeros((12, 10, 6), np.uint8)
        label[3:9, 2:8, 1:5] = 1
        label[5:7, 4:6, 2:4] = 2
        write_volume(tmp_path / f"img{i}.nii.gz", (label * 100 + rng.normal(0, 5, label.shape)).astype(np.float32), affine)
        write_volume(tmp_path / f"lab{i}.nii.gz", label, affine)
        entries.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"training": entries, "validation": entries[:1]}))
    return path


def test_datalist_and_monai_transforms(datalist):
    items = load_datalist(datalist, key="training")
    assert len(items) == 2 and items[0]["image"].endswith("img0.nii.gz")
    ev = build_3d_transforms(train=False, num_classes=3, pixdim=(2.0, 2.0, 1.5))(items[0])
    assert ev["image"].shape == (1, 12, 10, 11)  # z: 5 gaps of 3 mm = 10 of 1.5 mm
    assert np.allclose(np.diag(ev["image"].affine.numpy())[:3], (2.0, 2.0, 1.5))  # RAS after Orientation
    assert set(np.unique(ev["label"].numpy())) == {0, 1, 2}
    tr = build_3d_transforms(train=True, num_classes=3, patch_size=(8, 8, 4), num_samples=3, seed=0)(items[0])
    assert len(tr) == 3 and all(p["image"].shape == (1, 8, 8, 4) for p in tr)
    ranged = build_3d_transforms(train=False, num_classes=3, intensity_range=(0, 200))(items[0])
    assert 0.0 <= float(ranged["image"].min()) and float(ranged["image"].max()) <= 1.0


def test_datalist_errors(datalist, tmp_path):
    with pytest.raises(KeyError, match="no key 'test'.*training"):
        load_datalist(datalist, key="test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_datalist(tmp_path / "missing.json")
    (tmp_path / "img1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing file"):
        load_datalist(datalist)
    items = load_datalist(datalist, key="validation")
    # MONAI's Compose wraps errors in RuntimeError('applying transform ...'); ours surfaces the one naming the file
    with pytest.raises(ValueError, match=r"lab0.nii.gz' has values \[2\] outside"):
        build_3d_transforms(train=False, num_classes=2)(items[0])
