"""Issue 7, section 1: bad input gets an error of a clear type whose message names the file, key or
value and the fix, and no input file is touched (bytes and mtime compared after every case).

Each case runs with the network blocked (nothing may be fetched). Data-file cases for the 2D/3D
segmentation folders and the text-line lists are in ``tests/data/test_bad_files.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mmix_applied import ManifoldMixup
from mmix_applied.adapters import CTC, Classification, Regression, Segmentation
from mmix_applied.config import ConfigError, ConfigKeyError, ConfigTypeError, load_config
from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network, png, says, snapshot, truncate  # noqa: F401  (autouse fixture)

CONFIG = ROOT / "configs" / "classification.yaml"


# --------------------------------------------------------------------------- helpers
class _Tiny(nn.Module):
    """No batch norm: trains on one sample."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


class _BytesIn(nn.Module):
    """Takes uint8 images and converts them itself: mixing at 'input' cannot touch them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head((x.float() / 255).flatten(1))


# --------------------------------------------------------------------------- core
@pytest.mark.parametrize("alpha", [0, -1.0, math.nan, math.inf])
def test_alpha_not_positive(alpha):
    with pytest.raises(ValueError) as err:
        ManifoldMixup(_Tiny(), points=["input"], alpha=alpha)
    says(err, f"received {alpha!r}", "alpha must be a number > 0 and finite", "typical 0.2 to 2.0")


def test_integer_input_at_input_point_is_an_error_not_a_silent_unmixed_step():
    model = _BytesIn().train()
    mixer = ManifoldMixup(model, points=["input"], seed=0)
    x = torch.randint(0, 255, (4, 1, 4, 4), dtype=torch.uint8)
    with pytest.raises(TypeError) as err:
        mixer(x)
    says(err, "torch.uint8", "x.float() / 255")
    model.eval()
    assert model(x).shape == (4, 3)  # unmixed passes still accept it
    mixer.close()


def test_batch_size_one_mixes_with_itself():
    model = _Tiny().train()
    mixer = ManifoldMixup(model, points=["input", "conv"], seed=0)
    x, y = torch.randn(1, 1, 4, 4), torch.tensor([2])
    drawn = set()
    for _ in range(8):
        out, plan = mixer(x)
        drawn.add(plan.point)
        assert plan.perm.tolist() == [0]
        mixer.enabled = False
        plain, _ = mixer(x)
        mixer.enabled = True
        assert torch.equal(out, plain)  # lam*h + (1-lam)*h is h, exactly
        loss = Classification(3).loss(out, y, plan)
        assert loss.item() == pytest.approx(Classification(3).loss(plain, y).item(), abs=1e-6)
    assert drawn == {"input", "conv"}
    with pytest.raises(ValueError) as err:
        mixer.sample(0)
    says(err, "received 0", "int >= 1")
    mixer.close()


@pytest.mark.parametrize("make, needles", [
    (lambda: Regression().loss(torch.zeros(3, 1), torch.tensor([[0.0], [math.inf], [1.0]])),
     ["1 NaN/Inf values", "clean or mask them"]),
    (lambda: Classification(3).loss(torch.zeros(2, 3), torch.tensor([[0.5, 0.5, 0.0], [math.nan, 0.0, 1.0]])),
     ["NaN/Inf", "check the label pipeline"]),
])
def test_nan_or_inf_targets(make, needles):
    with pytest.raises(ValueError) as err:
        make()
    says(err, *needles)


# --------------------------------------------------------------------------- adapters
def test_mask_value_outside_classes_besides_ignore_index():
    mask = torch.zeros(2, 4, 4, dtype=torch.long)
    mask[0, 0, 0], mask[1, 1, 1] = 255, 5  # 255 is ignored, 5 is not a class
    with pytest.raises(ValueError) as err:
        Segmentation(3, ignore_index=255).loss(torch.randn(2, 3, 4, 4), mask)
    says(err, "to 5", "ignore_index=255 excepted", "[0, 3)", "Check num_classes=3")
    mask[1, 1, 1] = 2
    assert torch.isfinite(Segmentation(3, ignore_index=255).loss(torch.randn(2, 3, 4, 4), mask))


def test_float_mask_where_class_indices_are_expected_3d():
    with pytest.raises(TypeError) as err:
        Segmentation(2).loss(torch.randn(1, 2, 2, 4, 4), torch.ones(1, 2, 4, 4))
    says(err, "torch.float32", "mask.long()", "mode='multilabel'")


def test_output_and_mask_size_mismatch_3d():
    with pytest.raises(ValueError) as err:
        Segmentation(2).loss(torch.randn(1, 2, 4, 8, 8), torch.zeros(1, 4, 6, 6, dtype=torch.long))
    says(err, "(4, 6, 6)", "(4, 8, 8)", "resize the mask (nearest)")


def test_wrong_output_channels_for_segmentation():
    with pytest.raises(ValueError) as err:
        Segmentation(3).loss(torch.randn(2, 4, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    says(err, "(2, 4, 8, 8)", "(B, 3, H, W)", "Check the network's out channels")


def test_bool_class_targets():
    with pytest.raises(TypeError) as err:
        Classification(2).loss(torch.randn(3, 2), torch.tensor([True, False, True]))
    says(err, "torch.bool", "target.long()")


def _too_long_for_partner():
    log_probs = torch.randn(3, 2, 5).log_softmax(-1)  # T = 3
    targets = (torch.tensor([[1, 0, 0, 0], [1, 2, 3, 4]]), torch.tensor([1, 4]))  # sample 1 needs 4 steps
    plan = ManifoldMixup(_Tiny(), points=["input"], seed=0).sample(2)
    return log_probs, targets, plan


def test_ctc_target_longer_than_output_under_a_plan_names_samples_and_fix():
    log_probs, targets, plan = _too_long_for_partner()
    with pytest.raises(ValueError) as err:
        CTC().loss(log_probs, targets, plan)
    says(err, "samples [1]", "lengths [4]", "[3] steps", "CTC(zero_infinity=True)", "less downsampling")


def test_ctc_target_longer_than_output_with_zero_infinity_warns():
    log_probs, targets, plan = _too_long_for_partner()
    with pytest.warns(UserWarning, match="cannot be aligned"):
        loss = CTC(zero_infinity=True).loss(log_probs, targets, plan)
    assert torch.isfinite(loss)


def test_ctc_batch_mismatch_lists_every_shape():
    with pytest.raises(ValueError) as err:
        CTC().loss(torch.randn(6, 2, 5).log_softmax(-1), (torch.ones(3, 2, dtype=torch.long), torch.tensor([2, 2, 2])))
    says(err, "(6, 2, 5)", "(3, 2)", "all need B=2")


# --------------------------------------------------------------------------- classification data
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


# --------------------------------------------------------------------------- configs
def _yaml(tmp_path, raw):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("raw, key, suggestion", [
    ({"mix": {"alpah": 0.4}}, "'mix.alpah'", "Did you mean 'alpha'?"),
    ({"recipe": "handwriting", "data": {"tain": "lines.tsv"}}, "'data.tain'", "Did you mean 'train'?"),
    ({"recipe": "segmentation", "options": {"dice_wieght": 0.5}}, "'options.dice_wieght'", "Did you mean 'dice_weight'?"),
])
def test_misspelled_config_keys_in_every_recipe(tmp_path, raw, key, suggestion):
    path = _yaml(tmp_path, raw)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigKeyError) as err:
        load_config(path)
    says(err, key, suggestion, "Valid keys in section")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("raw, key, expected", [
    ({"recipe": "segmentation", "data": {"num_classes": "four"}}, "'data.num_classes'", "expected int, received str 'four'"),
    ({"recipe": "segmentation", "data": {"patch_size": 64}}, "'data.patch_size'", "expected list[int], received int 64"),
    ({"recipe": "handwriting", "data": {"height": "32px"}}, "'data.height'", "expected int, received str '32px'"),
])
def test_wrong_types_in_recipe_sections(tmp_path, raw, key, expected):
    path = _yaml(tmp_path, raw)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigTypeError) as err:
        load_config(path)
    says(err, key, expected)
    assert snapshot(tmp_path) == before


def test_negative_alpha_in_config():
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, ["mix.alpha=-0.5"])
    # the core's own rule and words (mmix_applied.core.mixer.ALPHA), with the config key
    says(err, "'mix.alpha'", "must be a number > 0 and finite", "(received -0.5)", "typical 0.2 to 2.0")


@pytest.mark.parametrize("recipe", ["segmentation", "handwriting"])
def test_batch_size_one_with_mixing_in_config(recipe):
    with pytest.raises(ConfigError) as err:
        load_config({"recipe": recipe, "data": {"batch_size": 1}})
    says(err, "'data.batch_size'", "received 1", "raise it or set mix.variant=none")


def test_misspelled_model_option_names_the_config_key():
    from mmix_applied.engine.modelzoo import build_model

    cfg = load_config(CONFIG, ["model.name=test_resnet", "model.options={drop_rat: 0.1}"])
    with pytest.raises(ConfigTypeError) as err:
        build_model(cfg.model, num_classes=3, in_channels=1)
    says(err, "'model.options'", "drop_rat", "remove or rename it")


# --------------------------------------------------------------------------- CLI
def _cli(capsys, *args):
    from mmix_applied.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    # one line, last, no traceback (a "--- Logging error ---" is a logging handler left on an earlier
    # test's closed capture stream, not ours)
    assert err.count("Traceback (most recent call last)") == err.count("--- Logging error ---")
    assert err.strip().splitlines()[-1].startswith("error: ")
    return code, err


def test_cli_fit_on_a_missing_folder_writes_nothing(tmp_path, capsys):
    code, err = _cli(capsys, "fit", "-c", CONFIG, "data.source=folder", f"data.path={tmp_path / 'nope'}",
                     f"run.dir={tmp_path / 'runs'}", "run.name=r")
    assert code == 2
    says(err, str(tmp_path / "nope"), "expected root/<class>/<image files>")
    assert not (tmp_path / "runs").exists()


def test_cli_config_file_with_a_typo_is_left_as_is(tmp_path, capsys):
    path = _yaml(tmp_path, {"train": {"max_epoch": 3}})
    before = snapshot(tmp_path)
    code, err = _cli(capsys, "fit", "-c", path)
    assert code == 2
    says(err, "'train.max_epoch'", "Did you mean 'max_epochs'?")
    assert snapshot(tmp_path) == before


def test_cli_truncated_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, ckpt)
    truncate(ckpt)
    before = snapshot(tmp_path)
    code, err = _cli(capsys, "test", "--checkpoint", ckpt, "-c", CONFIG, "model.name=test_resnet",
                     "train.accelerator=cpu", "train.enable_progress_bar=false")
    assert code == 2
    says(err, str(ckpt), "truncated, corrupt", "use another checkpoint")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cli_gpu_accelerator_without_gpu(tmp_path, capsys):
    code, err = _cli(capsys, "fit", "-c", CONFIG, "model.name=test_resnet", "data.labels_per_class=2",
                     "train.accelerator=gpu", f"run.dir={tmp_path}", "run.name=r")
    assert code == 2
    says(err, "gpu", "train.accelerator=cpu")


@pytest.mark.parametrize("kind", ["truncated .safetensors", "truncated .pth", "junk .pth"])
def test_damaged_pretrained_weights_file(tmp_path, kind):
    from safetensors.torch import save_file

    from mmix_applied.models import create_model

    state = {"w": torch.arange(4096.0), "b": torch.ones(8)}
    if kind == "truncated .safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
        truncate(path)
    elif kind == "truncated .pth":
        path = tmp_path / "w.pth"
        torch.save(state, path)
        truncate(path)
    else:
        path = tmp_path / "w.pth"
        path.write_bytes(b"not a checkpoint")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        create_model("timm", "test_resnet", num_classes=3, in_channels=1, pretrained=path)
    says(err, str(path), "truncated, corrupt", "export the weights again")
    assert snapshot(tmp_path) == before



@pytest.mark.parametrize("fault", ["label value 5", "truncated image"])
def test_cli_fit_on_a_bad_nifti_datalist_prints_the_file(tmp_path, capsys, fault):
    import json

    import nibabel as nib

    label = np.zeros((8, 8, 4), np.uint8)
    label[2:6, 2:6, 1:3] = 1
    nib.save(nib.Nifti1Image((label * 50 + 1).astype(np.float32), np.eye(4)), str(tmp_path / "img.nii.gz"))
    if fault == "label value 5":
        label[3, 3, 2] = 5
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "lab.nii.gz"))
    if fault == "truncated image":
        truncate(tmp_path / "img.nii.gz")
    pairs = [{"image": "img.nii.gz", "label": "lab.nii.gz"}] * 2
    (tmp_path / "dataset.json").write_text(json.dumps({"training": pairs, "validation": pairs, "test": pairs}))
    before = snapshot(tmp_path)
    code, err = _cli(capsys, "fit", "recipe=segmentation", "data.source=datalist", "data.spatial_dims=3",
                     f"data.datalist={tmp_path / 'dataset.json'}", "data.num_classes=2", "model.family=monai",
                     "model.name=unet", "model.options={channels: [4, 8], strides: [2], num_res_units: 0}",
                     "data.patch_size=[8, 8, 4]", "data.batch_size=2", "train.max_epochs=1", "train.accelerator=cpu",
                     "train.devices=1", "train.loggers=[]", "train.enable_progress_bar=false",
                     f"run.dir={tmp_path / 'runs'}", "run.name=r")
    assert code == 2
    if fault == "label value 5":
        says(err, str(tmp_path / "lab.nii.gz"), "[5]", "check num_classes")
    else:
        says(err, str(tmp_path / "img.nii.gz"))
    assert {k: v for k, v in snapshot(tmp_path).items() if "/runs/" not in k} == before


def test_cli_nan_inputs_stop_with_the_step_and_the_fixes(tmp_path, capsys, monkeypatch):
    from mmix_applied.tasks.classification import ClassificationRecipe

    monkeypatch.setattr(ClassificationRecipe, "split_batch", lambda self, b: (b[0] * float("nan"), b[1]))
    code, err = _cli(capsys, "fit", "-c", CONFIG, "model.name=test_resnet", "data.labels_per_class=2",
                     "data.batch_size=8", "train.max_epochs=1", "train.limit_train_batches=1",
                     "train.limit_val_batches=0", "train.accelerator=cpu", "train.devices=1", "train.loggers=[]",
                     "train.enable_progress_bar=false", f"run.dir={tmp_path}", "run.name=r")
    assert code == 2
    says(err, "training loss is nan at global step 0", "optim.lr=", "train.nonfinite_loss=skip")
