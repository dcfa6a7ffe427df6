"""Bad classification data: a missing or empty image folder, class folders without images, a
truncated image, a labels CSV naming a missing image or holding no rows. Each error names the file
and the fix; no input file is modified (bytes and mtime).
"""

from __future__ import annotations

import numpy as np
import pytest

from mmix_applied.config import load_config
from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network, png, says, snapshot, truncate  # noqa: F401  (autouse fixture)

CONFIG = ROOT / "configs" / "classification.yaml"


def _cls_recipe(path, *extra):
    from mmix_applied.tasks.classification import ClassificationRecipe

    return ClassificationRecipe(load_config(CONFIG, ["data.source=folder", f"data.path={path}", *extra]))


def test_missing_data_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        _cls_recipe(tmp_path / "nowhere").num_classes
    says(err, str(tmp_path / "nowhere"), "expected root/<class>/<image files>")


def test_empty_data_directory(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError) as err:
        _cls_recipe(tmp_path / "data").num_classes
    says(err, str(tmp_path / "data"), "no class subfolders", "expected root/<class>/<image files>")
    assert list((tmp_path / "data").iterdir()) == []


def test_class_folders_without_images(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "notes.txt").write_text("no images here")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _cls_recipe(tmp_path / "data").num_classes
    says(err, "['cat']", "no images", ".png")
    assert snapshot(tmp_path) == before


def test_truncated_image_in_a_class_folder(tmp_path):
    from mmix_applied.data.images import ImageFileDataset, list_image_folder

    for name in ("a", "b"):
        png(tmp_path / "data" / name / f"{name}0.png", np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8))
    bad = truncate(tmp_path / "data" / "b" / "b0.png")
    before = snapshot(tmp_path)
    items, _ = list_image_folder(tmp_path / "data")
    with pytest.raises(ValueError) as err:
        ImageFileDataset(items, channels=1)[1]
    says(err, str(bad), "cannot be decoded", "truncated")
    assert snapshot(tmp_path) == before


def test_labels_csv_naming_a_missing_image(tmp_path):
    from mmix_applied.data.images import ImageFileDataset, read_labels_csv

    png(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("path,label\nx.png,cat\ngone.png,dog\n")
    before = snapshot(tmp_path)
    items, classes = read_labels_csv(tmp_path / "labels.csv")
    assert classes == ["cat", "dog"]
    with pytest.raises(FileNotFoundError) as err:
        ImageFileDataset(items, channels=1)[1]
    says(err, str(tmp_path / "gone.png"), "does not exist")
    assert snapshot(tmp_path) == before


def test_labels_csv_with_header_only(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        _cls_recipe(tmp_path / "labels.csv", "data.source=csv").num_classes
    says(err, str(tmp_path / "labels.csv"), "has no rows")
    assert snapshot(tmp_path) == before
