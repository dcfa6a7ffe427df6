"""Bad data files for the segmentation (2D folders, 3D NIfTI datalists), text-line (IAM/TSV) and
classification-folder (TIFF) readers. Each error names the file and the fix; no input file
is modified (bytes and mtime).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from mmix_applied.config import load_config
from tests.helpers.bad_inputs import no_network, png, says, snapshot, truncate  # noqa: F401  (autouse fixture)


# --------------------------------------------------------------------------- 2D segmentation folders
def _pairs(root: Path, mask: np.ndarray | None = None, image: np.ndarray | None = None, *, mask_name="case0.png",
           image_name="case0.png") -> tuple[Path, Path]:
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "msk").mkdir(parents=True, exist_ok=True)
    image = np.full((8, 8), 100, np.uint8) if image is None else image
    mask = np.zeros((8, 8), np.uint8) if mask is None else mask
    if image_name.endswith(".tif") and image.dtype == np.float32:
        assert cv2.imwrite(str(root / "img" / image_name), image)
    else:
        png(root / "img" / image_name, image)
    assert cv2.imwrite(str(root / "msk" / mask_name), mask)
    return root / "img", root / "msk"


def _folder(img, msk, **kw):
    from mmix_applied.data.segmentation import SegmentationFolder

    return SegmentationFolder(img, msk, **{"num_classes": 3, "in_channels": 1, **kw})


def test_mask_values_outside_classes_besides_ignore_index(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0], mask[1, 1] = 255, 7
    img, msk = _pairs(tmp_path, mask)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _folder(img, msk, ignore_index=255)[0]
    says(err, str(msk / "case0.png"), "[7]", "0..2 or ignore_index=255", "check num_classes")
    assert snapshot(tmp_path) == before


def test_float_mask_where_class_indices_are_expected(tmp_path):
    mask = np.zeros((8, 8), np.float32)
    mask[2:4, 2:4] = 0.5
    img, msk = _pairs(tmp_path, mask, mask_name="case0.tif")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _folder(img, msk)[0]
    says(err, str(msk / "case0.tif"), "[0.5]", "multiclass range", "check num_classes, the mask mode")
    assert snapshot(tmp_path) == before


def test_image_and_mask_size_mismatch(tmp_path):
    img, msk = _pairs(tmp_path, np.zeros((6, 10), np.uint8))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _folder(img, msk)[0]
    says(err, "size mismatch", "case0.png is 8x8", "case0.png is 6x10")
    assert snapshot(tmp_path) == before


def test_empty_image_folder_and_missing_mask_folder(tmp_path):
    from mmix_applied.data.segmentation import find_pairs

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "readme.txt").write_text("not an image")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        find_pairs(tmp_path / "img", tmp_path / "img")
    says(err, str(tmp_path / "img"), "has no files ending in", ".png")
    assert snapshot(tmp_path) == before
    png(tmp_path / "img" / "a.png", np.zeros((4, 4), np.uint8))
    before = snapshot(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        find_pairs(tmp_path / "img", tmp_path / "masks")
    says(err, str(tmp_path / "masks"), "does not exist")
    assert snapshot(tmp_path) == before


def test_truncated_segmentation_image(tmp_path):
    img, msk = _pairs(tmp_path, image=np.random.default_rng(0).integers(0, 255, (8, 8), np.uint8))
    truncate(img / "case0.png")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _folder(img, msk)[0]
    says(err, str(img / "case0.png"), "cannot read", "not an image OpenCV can decode")
    assert snapshot(tmp_path) == before


def test_nan_pixels_in_a_float_image(tmp_path):
    image = np.full((8, 8), 0.5, np.float32)
    image[3, 3] = np.nan
    img, msk = _pairs(tmp_path, image=image, image_name="case0.tif")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _folder(img, msk)[0]
    assert snapshot(tmp_path) == before
    says(err, str(img / "case0.tif"), "NaN", "np.nan_to_num")


# --------------------------------------------------------------------------- 3D NIfTI datalists
def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


@pytest.fixture()
def volumes(tmp_path):
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:6, 2:6, 1:3] = 1
    _nifti(tmp_path / "img.nii.gz", (label * 50 + 1).astype(np.float32))
    _nifti(tmp_path / "lab.nii.gz", label)
    return tmp_path


def _load_pair(image: Path, label: Path):
    from mmix_applied.data.segmentation import build_3d_transforms

    return build_3d_transforms(train=False, num_classes=2)({"image": str(image), "label": str(label)})


def test_valid_pair_loads(volumes):  # the control for the cases below
    out = _load_pair(volumes / "img.nii.gz", volumes / "lab.nii.gz")
    assert tuple(out["image"].shape) == (1, 8, 8, 4) and set(np.unique(out["label"].numpy())) == {0, 1}


@pytest.mark.parametrize("bad", ["float 0.5", "NaN"])
def test_label_volume_with_float_or_nan_values(volumes, bad):
    label = np.zeros((8, 8, 4), np.float32)
    label[2:4, 2:4, 1] = 0.5 if bad == "float 0.5" else np.nan
    _nifti(volumes / "bad.nii.gz", label)
    before = snapshot(volumes)
    with pytest.raises(ValueError) as err:
        _load_pair(volumes / "img.nii.gz", volumes / "bad.nii.gz")
    assert snapshot(volumes) == before
    says(err, str(volumes / "bad.nii.gz"), "outside the multiclass range", "check num_classes")


def test_truncated_nifti(volumes):
    truncate(volumes / "img.nii.gz")
    before = snapshot(volumes)
    with pytest.raises(ValueError) as err:
        _load_pair(volumes / "img.nii.gz", volumes / "lab.nii.gz")
    assert snapshot(volumes) == before
    says(err, str(volumes / "img.nii.gz"), "re-export or copy it again")


def test_image_and_label_volume_size_mismatch(volumes):
    _nifti(volumes / "small.nii.gz", np.zeros((6, 8, 4), np.uint8))
    before = snapshot(volumes)
    with pytest.raises(ValueError) as err:
        _load_pair(volumes / "img.nii.gz", volumes / "small.nii.gz")
    assert snapshot(volumes) == before
    says(err, str(volumes / "img.nii.gz"), str(volumes / "small.nii.gz"), "(6, 8, 4)", "resample the label")


def test_nan_voxels_in_an_image_volume(volumes):
    image = np.ones((8, 8, 4), np.float32)
    image[0, 0, 0] = np.nan
    _nifti(volumes / "nan.nii.gz", image)
    before = snapshot(volumes)
    with pytest.raises(ValueError) as err:
        _load_pair(volumes / "nan.nii.gz", volumes / "lab.nii.gz")
    assert snapshot(volumes) == before
    says(err, str(volumes / "nan.nii.gz"), "NaN", "np.nan_to_num")


def test_empty_datalist(tmp_path):
    from mmix_applied.data.segmentation import load_datalist

    (tmp_path / "dataset.json").write_text(json.dumps({"training": []}))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        load_datalist(tmp_path / "dataset.json")
    assert snapshot(tmp_path) == before
    says(err, str(tmp_path / "dataset.json"), "'training'", "list the image/label pairs")


def test_malformed_datalist_json(tmp_path):
    from mmix_applied.data.segmentation import load_datalist

    (tmp_path / "dataset.json").write_text("{training: [}")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        load_datalist(tmp_path / "dataset.json")
    assert snapshot(tmp_path) == before
    says(err, str(tmp_path / "dataset.json"), "not valid JSON", '{"training": [')


def test_datalist_naming_a_missing_volume(volumes):
    from mmix_applied.data.segmentation import load_datalist

    (volumes / "dataset.json").write_text(json.dumps({"training": [{"image": "img.nii.gz", "label": "gone.nii.gz"}]}))
    before = snapshot(volumes)
    with pytest.raises(FileNotFoundError) as err:
        load_datalist(volumes / "dataset.json")
    says(err, str(volumes / "dataset.json"), "gone.nii.gz", "missing file")
    assert snapshot(volumes) == before


# --------------------------------------------------------------------------- text lines (IAM / TSV)
def _line(path: Path) -> Path:
    image = np.full((16, 48), 255, np.uint8)
    image[4:12, 4:44:5] = 0
    return png(path, image)


def _hw_recipe(*overrides):
    from mmix_applied.tasks.handwriting import HandwritingRecipe

    return HandwritingRecipe(load_config({"recipe": "handwriting"}, list(overrides)))


def test_transcription_with_characters_outside_the_charset(tmp_path):
    from mmix_applied.data.charset import UnknownCharacterError

    _line(tmp_path / "a.png")
    tsv = tmp_path / "train.tsv"
    tsv.write_text("a.png\tabc\na.png\tcafé\n", encoding="utf-8")
    before = snapshot(tmp_path)
    with pytest.raises(UnknownCharacterError) as err:
        _hw_recipe("data.format=tsv", f"data.train={tsv}", f"data.val={tsv}", "data.charset=abcdef").records()
    says(err, "'é' (U+00E9)", f"{tsv}:2@3", "add the characters")
    assert snapshot(tmp_path) == before


def test_iam_transcription_outside_the_charset_with_drop_keeps_the_rest(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("a01-000u-00 ok 154 19 1 2 3 4 ab\na01-000u-01 ok 154 19 1 2 3 4 a|z\n")
    recipe = _hw_recipe("data.format=iam", f"data.train={lines}", f"data.val={lines}", "data.charset=ab ",
                        "data.on_unknown=drop")
    assert [r.text for r in recipe.records()["train"]] == ["ab"]


def test_truncated_line_image(tmp_path):
    from mmix_applied.data.text_lines import TextLineDataset, read_tsv

    truncate(_line(tmp_path / "a.png"))
    (tmp_path / "list.tsv").write_text("a.png\tabc\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        TextLineDataset(read_tsv(tmp_path / "list.tsv"))[0]
    says(err, str(tmp_path / "a.png"), f"listed at {tmp_path / 'list.tsv'}:1", "cannot read line image")
    assert snapshot(tmp_path) == before


def test_missing_line_image(tmp_path):
    from mmix_applied.data.text_lines import TextLineDataset, read_tsv

    (tmp_path / "list.tsv").write_text("# images\ngone.png\tabc\n")
    before = snapshot(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        TextLineDataset(read_tsv(tmp_path / "list.tsv"))[0]
    says(err, str(tmp_path / "gone.png"), f"listed at {tmp_path / 'list.tsv'}:2")
    assert snapshot(tmp_path) == before


def test_empty_transcription_list(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("# no lines yet\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _hw_recipe("data.format=tsv", f"data.train={tsv}", f"data.val={tsv}").records()
    says(err, str(tsv), "no training lines")
    assert snapshot(tmp_path) == before


def test_transcription_list_not_in_utf8(tmp_path):
    from mmix_applied.data.text_lines import read_tsv

    tsv = tmp_path / "train.tsv"
    tsv.write_bytes("a.png\tcaf\xe9\n".encode("latin-1"))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        read_tsv(tsv)
    assert snapshot(tmp_path) == before
    says(err, f"{tsv}:1", "not UTF-8", "save the list as UTF-8")


def test_single_line_transcription_list_without_a_validation_list(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((16, 40), 255, np.uint8))
    tsv = tmp_path / "train.tsv"
    tsv.write_text("a.png\t12\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _hw_recipe("data.format=tsv", f"data.train={tsv}").records()
    says(err, str(tsv), "1 usable line", "data.val")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- datalist entries, empty transcriptions
@pytest.mark.parametrize("entry, key, shown", [
    ({"image": 5, "label": "lab.nii.gz"}, "'image'", "int 5"),
    ({"image": "img.nii.gz", "label": None}, "'label'", "NoneType None"),
    ({"image": ["img.nii.gz", 3], "label": "lab.nii.gz"}, "'image'", "list ['img.nii.gz', 3]"),
])
def test_datalist_entry_that_is_not_a_path_names_the_entry(volumes, entry, key, shown):
    from mmix_applied.data.segmentation import load_datalist

    good = {"image": "img.nii.gz", "label": "lab.nii.gz"}
    (volumes / "dataset.json").write_text(json.dumps({"training": [good, entry]}))
    before = snapshot(volumes)
    with pytest.raises(TypeError) as err:
        load_datalist(volumes / "dataset.json")
    says(err, str(volumes / "dataset.json"), "entry 1 of 'training'", key, "must be a file path", shown)
    assert snapshot(volumes) == before
    (volumes / "dataset.json").write_text(json.dumps({"training": [good, good]}))  # the control
    assert [Path(i["image"]).name for i in load_datalist(volumes / "dataset.json")] == ["img.nii.gz"] * 2


def test_all_empty_transcriptions_name_the_file(tmp_path):
    _line(tmp_path / "a.png")
    tsv = tmp_path / "train.tsv"
    tsv.write_text("a.png\t\na.png\t\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _hw_recipe("data.format=tsv", f"data.train={tsv}", f"data.val={tsv}").records()
    says(err, str(tsv), "every transcription of the 2 training line(s)", "a charset needs at least one character",
         "set data.charset")
    assert snapshot(tmp_path) == before
    recipe = _hw_recipe("data.format=tsv", f"data.train={tsv}", f"data.val={tsv}", "data.charset=ab")
    assert len(recipe.records()["train"]) == 2  # with a charset the lines are usable (empty targets)


def _cls_tiff(root: Path, image: np.ndarray) -> Path:
    (root / "a").mkdir(parents=True, exist_ok=True)
    png(root / "b" / "b0.png", np.zeros((8, 8), np.uint8))
    assert cv2.imwrite(str(root / "a" / "a0.tif"), image)
    return root / "a" / "a0.tif"


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1.0), (np.uint16, 65535.0)])
def test_float_and_16_bit_tiff_in_a_classification_folder_are_read_and_scaled(tmp_path, dtype, scale):
    from mmix_applied.data.images import read_image

    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    path = _cls_tiff(tmp_path, (ramp * scale).astype(dtype))
    before = snapshot(tmp_path)
    gray = read_image(path, channels=1)
    assert gray.dtype == np.uint8 and gray.shape == (8, 8, 1)
    np.testing.assert_array_equal(gray[:, :, 0], np.round(ramp * 255).astype(np.uint8))  # [0, 1] -> x 255
    rgb = read_image(path, channels=3)
    assert rgb.shape == (8, 8, 3) and (rgb == gray).all()
    assert snapshot(tmp_path) == before


def test_float_tiff_outside_unit_range_is_min_max_scaled_with_a_warning(tmp_path):
    from mmix_applied.data import images

    hu = np.linspace(-1000.0, 3000.0, 64, dtype=np.float32).reshape(8, 8)  # CT-like values
    path = _cls_tiff(tmp_path, hu)
    images._warned_scaling.discard("minmax")
    with pytest.warns(UserWarning, match=r"\[-1000, 3000\], outside \[0, 1\].*min-max scaled"):
        out = images.read_image(path, channels=1)
    expected = np.round((hu - hu.min()) / (hu.max() - hu.min()) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)


def test_float_tiff_with_nan_in_a_classification_folder(tmp_path):
    from mmix_applied.data.images import ImageFileDataset, list_image_folder

    image = np.full((8, 8), 0.5, np.float32)
    image[2, 2] = np.nan
    path = _cls_tiff(tmp_path, image)
    items, _ = list_image_folder(tmp_path)
    with pytest.raises(ValueError) as err:
        ImageFileDataset(items, channels=1)[0]
    says(err, str(path), "NaN/Inf", "np.nan_to_num")
