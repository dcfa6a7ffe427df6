"""The recipes on data in the formats people have (issue 23) and the data cases of issue 22: an
ImageFolder laid out per split, Pascal VOC palette masks on images of mixed sizes, a Decathlon
``dataset.json`` with an unlabelled test list and anisotropic NIfTI volumes, IAM ``lines.txt``; the
data summary ``fit`` prints; a resume after images were added. The tests write every file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mmix_applied.config import load_config
from mmix_applied.engine.split_record import SPLIT_RECORD_FILE, DataChangedError
from mmix_applied.errors import ConfigError
from mmix_applied.tasks.classification import ClassificationRecipe
from mmix_applied.tasks.handwriting import HandwritingRecipe
from mmix_applied.tasks.segmentation import SegmentationRecipe
from tests.data.test_user_formats import VOC_PALETTE
from tests.helpers import ROOT

FAST = ["model.name=test_resnet", "data.image_size=16", "data.batch_size=4", "train.max_epochs=1",
        "train.limit_train_batches=2", "train.limit_val_batches=1", "train.accelerator=cpu",
        "train.enable_progress_bar=false", "train.loggers=[csv]"]


def _images(folder: Path, classes=("cat", "dog"), per_class=4, size=12, seed=0) -> None:
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / name / f"{name}{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _split_layout(root: Path) -> Path:
    """ImageNet-style: root/train/<class>/, root/val/<class>/, root/test/<class>/ (torchvision ImageFolder per split)."""
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        _images(root / split, per_class=n, seed=len(split))
    return root


def test_a_folder_of_train_val_test_folders_gives_the_splits_not_three_classes(tmp_path):
    root = _split_layout(tmp_path / "imgs")
    recipe = ClassificationRecipe(load_config(None, [*FAST, "data.source=folder", f"data.path={root}"]))
    assert recipe.class_names == ["cat", "dog"]  # was ['test', 'train', 'val']
    dm = recipe.build_datamodule()
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [12, 4, 6]
    assert all("/test/" in p for p, _ in dm.dataset("test").items)
    description = recipe.describe_data(dm)
    assert any("one folder per split (train/, val/, test/)" in note for note in description.notes)
    (root / "extra").mkdir()
    (root / "extra" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"split folders \['test', 'train', 'val'\] beside other folders \['extra'\]"):
        ClassificationRecipe(load_config(None, [*FAST, "data.source=folder", f"data.path={root}"])).class_names


def test_predict_on_a_folder_with_a_stray_subfolder_predicts_every_image(tmp_path):
    train = tmp_path / "train"
    _images(train, per_class=10)
    recipe = ClassificationRecipe(load_config(None, [*FAST, "data.source=folder", f"data.path={train}"]))
    new = tmp_path / "new"
    _images(new, classes=("misc",), per_class=1)  # a stray subfolder
    for i in range(3):
        cv2.imwrite(str(new / f"scan{i}.png"), np.zeros((12, 12, 3), np.uint8))
    items = recipe._predict_items(str(new))
    assert sorted(Path(p).name for p, _ in items) == ["misc0.png", "scan0.png", "scan1.png", "scan2.png"]
    assert all(label is None for _, label in items)
    labelled = tmp_path / "labelled"  # subfolders named after training classes keep their labels
    _images(labelled, classes=("dog",), per_class=2)
    cv2.imwrite(str(labelled / "loose.png"), np.zeros((12, 12, 3), np.uint8))
    assert [(Path(p).name, lab) for p, lab in recipe._predict_items(str(labelled))] == [
        ("dog0.png", 1), ("dog1.png", 1), ("loose.png", None)]


def _weights(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    from mmix_applied.models import create_model

    source = create_model("timm", "test_resnet", num_classes=5, in_channels=3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return path


def test_fit_prints_the_data_summary_and_the_pretrained_load_report(tmp_path, capsys):
    from mmix_applied.engine.runner import fit

    root = _split_layout(tmp_path / "imgs")
    cfg = load_config(None, [*FAST, "data.source=folder", f"data.path={root}", f"run.dir={tmp_path / 'runs'}",
                             "run.name=r", f"model.pretrained={_weights(tmp_path)}"])
    fit(cfg)
    out = capsys.readouterr().out
    block = out[out.index("data:"):].split("\n\n")[0]
    assert f"train      12 from {root / 'train'}; sizes 12x12" in block
    assert f"val         4 from {root / 'val'}" in block and f"test        6 from {root / 'test'}" in block
    assert "classes (2): cat, dog" in block and "model input: resized to 16x16, 3 channel(s)" in block
    assert f"weights: {tmp_path / 'w.safetensors'}: 90 tensors loaded; head reset (fresh): fc.bias, fc.weight" in block
    assert "no key missing or unexpected" in block


def test_resume_after_images_were_added_is_refused_naming_the_changes(tmp_path):
    from mmix_applied.engine.runner import fit

    data = tmp_path / "imgs"
    _images(data, per_class=10)
    args = [*FAST, "data.source=folder", f"data.path={data}", "data.val_fraction=0.2", "data.test_fraction=0.2",
            f"run.dir={tmp_path / 'runs'}", "run.name=r"]
    run = fit(load_config(None, args))
    record = json.loads((run / SPLIT_RECORD_FILE).read_text())
    assert {k: v["count"] for k, v in record["splits"].items()} == {"train": 12, "val": 4, "test": 4}
    test_before = set(record["splits"]["test"]["items"])
    _images(data, per_class=14, seed=1)  # 4 new images per class: the seeded split moves
    with pytest.raises(DataChangedError, match=r"train: 12 -> \d+ items, \d+ added .*removed.*now in (val|test)"):
        fit(load_config(None, [*args, "train.max_epochs=2"]), resume="last")
    assert json.loads((run / SPLIT_RECORD_FILE).read_text())["splits"]["test"]["items"] == sorted(test_before)
    for name in ("cat", "dog"):  # the data as it was: the resume goes on
        for i in range(10, 14):
            (data / name / f"{name}{i}.png").unlink()
    fit(load_config(None, [*args, "train.max_epochs=2"]), resume="last")


# --------------------------------------------------------------------------- segmentation: Pascal VOC


def _voc(root: Path, sizes=((40, 48), (36, 52), (40, 48), (72, 40), (36, 52), (40, 48))) -> Path:
    """VOC2012's layout: JPEGImages/*.jpg and SegmentationClass/*.png palette masks with a void (255) border."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: h // 2, w // 4: w // 2] = 1
        mask[h // 2:, w // 2:] = 2
        image = (mask * 90 + rng.integers(0, 30, (h, w))).astype(np.uint8)
        mask[[0, -1], :], mask[:, [0, -1]] = 255, 255
        cv2.imwrite(str(root / "JPEGImages" / f"2007_{i:06d}.jpg"), np.dstack([image] * 3))
        palette = Image.fromarray(mask, mode="P")
        palette.putpalette(VOC_PALETTE)
        palette.save(root / "SegmentationClass" / f"2007_{i:06d}.png")
    return root


def _voc_config(tmp_path: Path, root: Path, **data) -> object:
    images, masks = str(root / "JPEGImages"), str(root / "SegmentationClass")
    fields = {"source": "folders", "num_classes": 3, "in_channels": 3, "batch_size": 2, "ignore_index": 255,
              "class_names": ["background", "aeroplane", "bicycle"], "crop_size": [32, 32], **data}
    for split in ("train", "val", "test"):
        fields[f"{split}_images"], fields[f"{split}_masks"] = images, masks
    return load_config({
        "recipe": "segmentation", "run": {"dir": str(tmp_path / "runs"), "name": "voc"},
        "model": {"family": "smp", "name": "unet", "options": {"encoder_name": "resnet18", "encoder_depth": 2}},
        "mix": {"variant": "manifold"},
        "train": {"max_epochs": 1, "limit_train_batches": 2, "accelerator": "cpu", "enable_progress_bar": False,
                  "loggers": ["csv"]},
        "data": fields})


def test_voc_palette_masks_on_images_of_mixed_sizes_fit_test_and_predict(tmp_path, capsys):
    from mmix_applied.engine.runner import fit, predict, test

    cfg = _voc_config(tmp_path, _voc(tmp_path / "VOC2012"))
    run = fit(cfg)
    out = capsys.readouterr().out
    assert "val: whole images of 3 sizes, evaluated in batches of one size (at most 2 images each)" in out
    assert "sizes 40x48 (3), 36x52 (2), 72x40 (1)" in out
    metrics = test(cfg, checkpoint=str(run))
    assert 0.0 <= metrics["test/dice_aeroplane"] <= 1.0 and np.isfinite(metrics["test/nll"])
    written = predict(cfg, checkpoint=str(run))
    rows = written.read_text().splitlines()[1:]
    shapes = [cv2.imread(str(written.parent / r.split(",")[1]), cv2.IMREAD_UNCHANGED).shape for r in rows]
    assert shapes == [(40, 48), (36, 52), (40, 48), (72, 40), (36, 52), (40, 48)]  # every image, its own size


def test_training_on_images_of_mixed_sizes_without_crops_names_data_crop_size(tmp_path):
    recipe = SegmentationRecipe(_voc_config(tmp_path, _voc(tmp_path / "VOC2012"), crop_size=None))
    with pytest.raises(ConfigError, match=r"'data.crop_size'.*3 sizes \(40x48 \(3\), 36x52 \(2\), 72x40 \(1\).*"
                                          r"data.crop_size: \[32, 32\]"):
        recipe.build_datamodule().train_dataloader()


# --------------------------------------------------------------------------- segmentation: the Decathlon


def _msd(root: Path, with_validation: bool = True) -> Path:
    """A Medical Segmentation Decathlon task folder: imagesTr/labelsTr pairs, imagesTs without labels,
    anisotropic voxels (0.8 x 0.8 x 3 mm), and dataset.json with 'labels' and a bare 'test' list."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    rng = np.random.default_rng(0)
    training, test = [], []
    for i in range(4):
        label = np.zeros((16, 12, 6), np.uint8)
        label[3:9, 2:8, 1:4], label[5:7, 4:6, 2:3] = 1, 2
        image = (label * 100 + rng.normal(0, 5, label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"prostate_{i:02d}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"prostate_{i:02d}.nii.gz"))
        training.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTs" / f"prostate_{i + 10:02d}.nii.gz"))
        test.append(f"./imagesTs/prostate_{i + 10:02d}.nii.gz")
    content = {"name": "Prostate", "modality": {"0": "T2"}, "labels": {"0": "background", "1": "PZ", "2": "TZ"},
               "numTraining": 3, "numTest": 4, "training": training[:3], "test": test}
    if with_validation:
        content["validation"] = training[3:]
    (root / "dataset.json").write_text(json.dumps(content, indent=1))
    return root / "dataset.json"


def _msd_recipe(datalist: Path, *overrides: str) -> SegmentationRecipe:
    return SegmentationRecipe(load_config(ROOT / "configs" / "segmentation_3d.yaml", [
        "data.source=datalist", f"data.datalist={datalist}", "data.num_classes=3", "data.patch_size=[8,8,4]",
        "data.pixdim=null", "data.intensity_range=null", *overrides]))


def test_decathlon_labels_name_the_classes(tmp_path):
    datalist = _msd(tmp_path / "Task05_Prostate")
    assert _msd_recipe(datalist).class_names() == ["background", "PZ", "TZ"]  # was class0, class1, class2
    with pytest.raises(ConfigError, match=r"'data.num_classes': received 4.*names 3 classes.*num_classes: 3"):
        _msd_recipe(datalist, "data.num_classes=4").class_names()


def test_decathlon_unlabelled_test_list_says_which_key_to_set_and_predict_reads_it(tmp_path):
    datalist = _msd(tmp_path / "Task05_Prostate")
    recipe = _msd_recipe(datalist)
    dm = recipe.build_datamodule()
    with pytest.raises(ValueError, match=r"'data.test_key'.*'test' list has no labels \(4 image.*Decathlon.*"
                                         r"data.test_key=validation.*predict"):
        dm.test_dataloader()
    description = recipe.describe_data(dm)  # fit's summary says so instead of failing
    assert [(s.name, s.count) for s in description.splits] == [("train", 3), ("val", 1)]
    assert any(note.startswith("test: not available to `test`") for note in description.notes)
    assert description.splits[0].sizes == [(16, 12, 6)] * 3
    predict = recipe.build_datamodule().dataset("predict")  # predict runs on the unlabelled list
    assert [Path(item["image"]).name for item in predict.items] == [f"prostate_{i}.nii.gz" for i in range(10, 14)]


def test_decathlon_without_a_validation_list_names_data_val_key(tmp_path):
    datalist = _msd(tmp_path / "Task05_Prostate", with_validation=False)
    with pytest.raises(KeyError, match=r"'data.val_key'.*no key 'validation'.*Decathlon.*'validation' list"):
        _msd_recipe(datalist).build_datamodule().val_dataloader()


# --------------------------------------------------------------------------- handwriting: IAM lines.txt


def _iam(root: Path) -> Path:
    lines = root / "ascii" / "lines.txt"
    lines.parent.mkdir(parents=True)
    rows = ["#--- lines.txt ---", "# format: a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop",
            "a01-000u-00 ok 154 19 408 746 1663 91 A|MOVE|to|stop", "a01-000u-01 err 156 19 395 932 1850 105 Mr.|Gait",
            "a01-000u-02 ok 157 16 408 1106 1838 105 from|nominating", "a01-003-00 ok 170 24 366 751 1690 82 Labour|life|Peers"]
    lines.write_text("\n".join(rows) + "\n")
    for row in rows[2:]:
        line_id = row.split()[0]
        path = root / "lines" / line_id.split("-")[0] / "-".join(line_id.split("-")[:2]) / f"{line_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = np.full((40, 120), 255, np.uint8)
        image[10:30, 5:115:7] = 0
        cv2.imwrite(str(path), image)
    (root / "train.txt").write_text("a01-000u\n")
    (root / "test.txt").write_text("a01-003\n")
    return lines


def _iam_recipe(root: Path, *overrides: str) -> HandwritingRecipe:
    lines = _iam(root)
    return HandwritingRecipe(load_config(ROOT / "configs" / "handwriting.yaml", [
        "data.format=iam", f"data.train={lines}", f"data.image_root={root / 'lines'}",
        f"data.train_ids={root / 'train.txt'}", f"data.val_ids={root / 'train.txt'}",
        f"data.test_ids={root / 'test.txt'}", "data.batch_size=2", *overrides]))


def test_unknown_character_error_names_the_config_keys(tmp_path):
    with pytest.raises(ValueError, match=r"'L' .*lines.txt:6.*data.on_unknown=drop") as err:
        _iam_recipe(tmp_path).records()
    assert "unknown='skip'" not in str(err.value)  # a Python argument, not a config key
    with pytest.raises(ValueError, match=r"add the characters to data.charset.*data.on_unknown=drop"):
        _iam_recipe(tmp_path / "b", "data.charset=abc").records()


def test_iam_data_summary_names_the_lists_the_charset_and_the_lines(tmp_path):
    recipe = _iam_recipe(tmp_path, "data.on_unknown=drop")
    description = recipe.describe_data(recipe.build_datamodule())
    assert [(s.name, s.count) for s in description.splits] == [("train", 3), ("val", 3), ("test", 0)]
    assert description.charset == recipe.charset.chars and "M" in description.charset
    train = description.splits[0]
    assert train.source.endswith(f"lines.txt (ids from {tmp_path / 'train.txt'})")
    assert train.ids[0] == "a01/a01-000u/a01-000u-00.png\tA MOVE to stop"
