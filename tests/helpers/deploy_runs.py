"""Tiny trained runs of each recipe for the deploy tests, their input files, and a fresh interpreter.

Every run trains for one or two epochs on a few images the helpers write themselves (MNIST digits
from the embedded set, synthetic masks and volumes); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np

from mmix_applied.config import load_config
from tests.helpers import ROOT

__all__ = ["CPU", "chdir", "fresh_python", "tree_digest", "write_class_folders", "write_line_images",
           "write_segmentation_folders", "write_volumes", "classification_config", "segmentation_2d_config",
           "segmentation_3d_config", "handwriting_config"]

#: Keys every tiny run shares: CPU, one process, quiet, CSV logs only.
CPU = ["train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false", "train.loggers=[csv]"]


@contextlib.contextmanager
def chdir(path: Path):
    """Run the block with ``path`` as the working directory."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def fresh_python(code: str, *, cwd: Path) -> dict:
    """Run ``code`` in a new interpreter (the repository not on its path); it prints a JSON line last."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def tree_digest(folder: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every file under ``folder`` (to prove nothing was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- classification
def write_class_folders(root: Path, *, per_class: int = 10) -> list[Path]:
    """``root/data/c<digit>/<i>.png`` (MNIST digits) and three unlabeled ``root/inputs/*.png``; returns the inputs."""
    from mmix_applied.data.mnist import load_mnist

    images, labels = load_mnist()
    for digit in range(10):
        folder = root / "data" / f"c{digit}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, index in enumerate(np.flatnonzero(labels == digit)[:per_class]):
            cv2.imwrite(str(folder / f"{i}.png"), images[index])
    inputs = root / "inputs"
    inputs.mkdir(exist_ok=True)
    paths = []
    for i, index in enumerate((4000, 4100, 4200)):
        paths.append(inputs / f"digit{i}.png")
        cv2.imwrite(str(paths[-1]), images[index])
    return paths


def classification_config(run_dir: Path, *extra: str):
    """A timm ``test_resnet`` on ``data`` (a relative path: the caller's working directory holds it), 2 epochs."""
    return load_config(ROOT / "configs" / "classification.yaml", [
        "model.name=test_resnet", "data.source=folder", "data.path=data", "data.labels_per_class=null", "data.image_size=28", "data.channels=1",
        "data.batch_size=8", "data.eval_batch_size=8", "train.max_epochs=2", "train.limit_train_batches=2",
        "train.limit_val_batches=2", "train.limit_test_batches=1", *CPU, f"run.dir={run_dir.parent}",
        f"run.name={run_dir.name}", *extra])


# ---------------------------------------------------------------------- segmentation
def write_segmentation_folders(root: Path, *, n: int = 4, size: tuple[int, int] = (20, 28)) -> tuple[Path, Path]:
    """Grey images with 3-class masks (``root/img``, ``root/msk``), one size smaller than the pad divisor."""
    rng = np.random.default_rng(0)
    for sub in ("img", "msk"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros(size, np.uint8)
        mask[rng.integers(0, 8):, rng.integers(0, 10):rng.integers(14, 28)] = 1
        mask[:4, :4] = 2
        cv2.imwrite(str(root / "img" / f"c{i}.png"), (mask * 100 + rng.integers(0, 20, size)).astype(np.uint8))
        cv2.imwrite(str(root / "msk" / f"c{i}.png"), mask)
    return root / "img", root / "msk"


def segmentation_2d_config(run_dir: Path, images: Path, masks: Path):
    """An smp Unet (resnet18 encoder, depth 2) on the folders, one epoch."""
    data = {"source": "folders", "num_classes": 3, "in_channels": 1, "batch_size": 2, "class_names": ["bg", "a", "b"]}
    for split in ("train", "val", "test"):
        data[f"{split}_images"], data[f"{split}_masks"] = str(images), str(masks)
    return load_config({
        "recipe": "segmentation", "run": {"dir": str(run_dir.parent), "name": run_dir.name},
        "model": {"family": "smp", "name": "unet", "options": {"encoder_name": "resnet18", "encoder_depth": 2}},
        "train": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "accelerator": "cpu",
                  "enable_progress_bar": False, "loggers": ["csv"]},
        "data": data})


def write_volumes(root: Path) -> Path:
    """An anisotropic LAS volume with a 3-class label, as a Decathlon datalist; returns the JSON."""
    affine = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    label = np.zeros((14, 12, 8), np.uint8)
    label[1:7, 2:9, 1:6], label[2:5, 4:7, 2:4] = 1, 2
    rng = np.random.default_rng(0)
    image = (label * 100.0 + rng.normal(0, 10, label.shape)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), str(root / "vol.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(root / "lab.nii.gz"))
    pair = [{"image": "vol.nii.gz", "label": "lab.nii.gz"}]
    (root / "d.json").write_text(json.dumps({"training": pair * 2, "validation": pair, "test": pair}))
    return root / "d.json"


def segmentation_3d_config(run_dir: Path, datalist: Path):
    """A MONAI UNet (3 levels, 4-16 channels) on 16x16x8 patches, one epoch."""
    return load_config({
        "recipe": "segmentation", "run": {"dir": str(run_dir.parent), "name": run_dir.name},
        "model": {"family": "monai", "name": "unet", "options": {"channels": [4, 8, 16], "num_res_units": 1}},
        "train": {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, "accelerator": "cpu",
                  "enable_progress_bar": False, "loggers": ["csv"]},
        "options": {"sw_batch_size": 2},
        "data": {"source": "datalist", "spatial_dims": 3, "num_classes": 3, "datalist": str(datalist),
                 "pixdim": [2.0, 2.0, 2.0], "intensity_range": [0, 300], "patch_size": [16, 16, 8], "batch_size": 2,
                 "num_samples": 2}})


# ---------------------------------------------------------------------- handwriting
def write_line_images(folder: Path) -> list[Path]:
    """Three digit lines of different widths, dark ink on white (as scans are)."""
    from mmix_applied.data.digit_strings import DigitStrings

    folder.mkdir(parents=True, exist_ok=True)
    lines = DigitStrings("test", num_lines=3, min_digits=2, max_digits=5, seed=7, glyph_seed=0)
    paths = []
    for i in range(3):
        image = lines.line(i)[0]
        paths.append(folder / f"line{i}.png")
        cv2.imwrite(str(paths[-1]), 255 - image.astype(np.uint8))
    return paths


def handwriting_config(run_dir: Path):
    """A small CRNN on the embedded digit strings, one epoch."""
    return load_config(ROOT / "configs" / "handwriting.yaml", [
        f"run.dir={run_dir.parent}", f"run.name={run_dir.name}", "model.options={hidden_size: 8, cnn_widths: [4, 8, 8, 8]}",
        "data.batch_size=4", "data.eval_batch_size=4", "data.digits.train_lines=12", "data.digits.val_lines=4",
        "data.digits.test_lines=6", "data.digits.max_digits=4", "train.max_epochs=1", "mix.warmup_epochs=0", *CPU])
