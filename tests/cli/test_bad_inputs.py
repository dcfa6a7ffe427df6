"""Bad input through the command line: each ends in one ``error:`` line (no traceback) and exit
status 2, and no input file is touched (bytes and mtime compared).

Each case runs with the network blocked (nothing may be fetched). The same errors raised by the
library are checked where their code lives: tests/core, tests/adapters, tests/data and
tests/engine (``test_bad_*.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network, says, snapshot, truncate, write_yaml  # noqa: F401  (autouse fixture)

CONFIG = ROOT / "configs" / "classification.yaml"


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
    path = write_yaml(tmp_path, {"train": {"max_epoch": 3}})
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
