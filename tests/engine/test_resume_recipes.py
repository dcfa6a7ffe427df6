"""Exact resume for every recipe: a fit SIGKILLed after an epoch and resumed ends with the weights
of an uninterrupted run (classification: tests/engine/test_resume.py). Each recipe runs its own data path
(2D folders, 3D datalists with MONAI patches, text lines), so its order and augmentation must
depend only on ``(seed, epoch, index)`` and the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

from mmix_applied.config import load_config
from mmix_applied.engine import SeededRandomSampler, fit, load_checkpoint
from tests.helpers import ROOT

COMMON = ["train.accelerator=cpu", "train.devices=1", "train.deterministic=true", "train.enable_progress_bar=false",
          "train.loggers=[]", "train.limit_val_batches=1", "seed=5"]


def _folders(tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    for kind in ("img", "msk"):
        (tmp / kind).mkdir(parents=True, exist_ok=True)
    for i in range(8):
        mask = np.zeros((24, 24), np.uint8)
        mask[rng.integers(0, 8):rng.integers(12, 24), rng.integers(0, 8):rng.integers(12, 24)] = 1 + i % 2
        image = (mask * 90 + rng.integers(0, 60, mask.shape)).astype(np.uint8)
        cv2.imwrite(str(tmp / "img" / f"s{i}.png"), image)
        cv2.imwrite(str(tmp / "msk" / f"s{i}.png"), mask)
    paths = [f"data.{s}_{k}={tmp / d}" for s in ("train", "val", "test") for k, d in (("images", "img"), ("masks", "msk"))]
    return ["data.source=folders", "data.num_classes=3", "data.in_channels=1", "data.batch_size=2",
            "data.pad_divisor=8", "model.family=smp", "model.name=unet",
            "model.options={encoder_name: resnet18, encoder_depth: 2, decoder_channels: [8, 8]}", *paths]


def _datalist(tmp: Path) -> list[str]:
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(4):
        label = np.zeros((12, 12, 8), np.uint8)
        label[2:8, 3:9, 1:6] = 1
        label[4:6, 5:7, 2:4] = 2
        image = (label * 100 + rng.normal(0, 10, label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp / f"v{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp / f"l{i}.nii.gz"))
        pairs.append({"image": f"v{i}.nii.gz", "label": f"l{i}.nii.gz"})
    (tmp / "data.json").write_text(json.dumps({"training": pairs, "validation": pairs[:1], "test": pairs[:1]}))
    return ["data.source=datalist", f"data.datalist={tmp / 'data.json'}", "data.num_classes=3",
            "data.patch_size=[8,8,4]", "data.num_samples=2", "data.batch_size=2", "data.intensity_range=[0,300]",
            "model.options={channels: [4, 8], strides: [2], num_res_units: 0}"]


HANDWRITING = ["model.options={hidden_size: 8, cnn_widths: [4, 8, 8, 8]}", "data.batch_size=4",
               "data.digits.train_lines=16", "data.digits.val_lines=4", "data.digits.test_lines=4",
               "data.digits.max_digits=4", "mix.prob=0.7"]

#: recipe -> (config file, builder of its data overrides, epochs, training batches per epoch)
CASES = {
    "segmentation_2d": ("segmentation.yaml", _folders, 4, 4),
    "segmentation_3d": ("segmentation_3d.yaml", _datalist, 4, 2),
    "handwriting": ("handwriting.yaml", lambda tmp: HANDWRITING, 4, 4),
}


def _args(case: str, tmp: Path, name: str) -> tuple[Path, list[str]]:
    file, data, epochs, batches = CASES[case]
    return ROOT / "configs" / file, [*COMMON, *data(tmp), f"train.max_epochs={epochs}",
                                     f"train.limit_train_batches={batches}", f"run.dir={tmp / 'runs'}",
                                     f"run.name={name}"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture
def one_thread():
    """The killed run is a subprocess with one thread; the in-process runs use one too, or float
    reductions split differently across threads and the weights differ in the last bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _kill_after_first_checkpoint(config: Path, args: list[str], last: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmix_applied.cli", "fit", "-c", str(config), *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while not last.exists():
            if proc.poll() is not None:
                pytest.fail(f"fit exited before writing a checkpoint: {proc.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 300 s")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return int(load_checkpoint(last)["epoch"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, case, one_thread):
    config, args = _args(case, tmp_path, "killed")
    last = tmp_path / "runs" / "killed" / "checkpoints" / "last.ckpt"
    killed_at = _kill_after_first_checkpoint(config, args, last)
    epochs = CASES[case][2]
    if killed_at >= epochs - 1:
        pytest.skip("the run finished before the kill landed (machine too fast for this test's sizes)")

    fit(load_config(config, args), resume="last")
    reference = fit(load_config(config, _args(case, tmp_path, "reference")[1]))
    assert load_checkpoint(last)["epoch"] == epochs - 1
    assert _max_diff(_weights(reference), _weights(last.parent.parent)) == 0.0


def test_the_resume_check_sees_a_replayed_data_order(tmp_path, monkeypatch, one_thread):
    """Control (built to fail): a loader that forgets the epoch replays epoch 0's order after a
    resume, the bug segmentation had; the comparison above must see it."""
    config, full_args = _args("segmentation_2d", tmp_path, "full")
    full = fit(load_config(config, [*full_args, "train.max_epochs=2", "train.save_top_k=-1"]))
    resumed = tmp_path / "runs" / "replayed" / "checkpoints"
    resumed.mkdir(parents=True)
    (resumed / "last.ckpt").write_bytes((full / "checkpoints" / "epoch000.ckpt").read_bytes())
    monkeypatch.setattr(SeededRandomSampler, "set_epoch", lambda self, epoch: None)
    fit(load_config(config, [*_args("segmentation_2d", tmp_path, "replayed")[1], "train.max_epochs=2"]),
        resume="last")
    assert _max_diff(_weights(full), _weights(resumed.parent)) > 0
