"""The segmentation recipe's ``digit_canvas`` source: its splits, a tiny fit, predict on the test canvases."""

import csv

import cv2
import numpy as np
import pytest
import torch

from mmix_applied.config import load_config
from mmix_applied.data.digit_canvas import CANVAS_CLASSES, digit_canvas_datasets
from mmix_applied.engine import load_checkpoint
from mmix_applied.engine.runner import fit, predict
from mmix_applied.tasks.segmentation import SegmentationRecipe
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "segmentation_digits.yaml"
TINY = ["data.num_train=8", "data.batch_size=4", "train.max_epochs=1", "train.limit_val_batches=1",
        "train.limit_test_batches=1", "train.limit_predict_batches=1", "train.accelerator=cpu", "train.devices=1",
        "train.enable_progress_bar=false", "train.loggers=[csv]", "scheduler.warmup_epochs=0",
        "model.options={channels: [4, 8], strides: [2], num_res_units: 0}"]


def test_splits_are_the_digit_canvas_datasets(tmp_path):
    cfg = load_config(CONFIG, [*TINY, "seed=3", f"run.dir={tmp_path}"])
    recipe = SegmentationRecipe(cfg)
    dm = recipe.build_datamodule()
    want = digit_canvas_datasets(seed=3, num_train=8)
    for split in ("train", "val", "test"):
        got = dm.dataset(split)
        assert len(got) == len(want[split])
        image, mask = got[len(got) - 1]
        ref_image, ref_mask = want[split][len(got) - 1]
        assert torch.equal(image, ref_image) and torch.equal(mask, ref_mask)
    assert recipe.class_names() == list(CANVAS_CLASSES)


def test_tiny_fit_and_predict_on_the_test_canvases(tmp_path):
    cfg = load_config(CONFIG, [*TINY, f"run.dir={tmp_path}", "run.name=d"])
    run = fit(cfg)
    rows = list(csv.DictReader((run / "logs" / "metrics.csv").read_text().splitlines()))
    assert any(r.get("val/mean_dice") for r in rows) and any(r.get("val/dice_7") for r in rows)
    assert [float(r["train/mixed"]) for r in rows if r.get("train/mixed")] == [1.0]
    written = predict(cfg, checkpoint="last")
    lines = written.read_text().splitlines()
    assert lines[0] == "name,mask" and lines[1].startswith("canvas0000,") and len(lines) == 1 + 4
    mask = cv2.imread(str(written.parent / lines[1].split(",")[1]), cv2.IMREAD_UNCHANGED)
    # the written mask is the argmax of the checkpoint's model on test canvas 0, recomputed here
    recipe = SegmentationRecipe(cfg)
    model = recipe.build_model()
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    image, _ = digit_canvas_datasets(seed=0, num_train=8)["test"][0]
    with torch.no_grad():
        want = model(image[None]).argmax(1)[0].numpy().astype(np.uint8)
    assert mask.shape == (64, 64) and np.array_equal(mask, want)


@pytest.mark.parametrize(("override", "fragment"), [
    ("data.num_classes=4", "data.source=digit_canvas has 11 classes"),
    ("data.spatial_dims=3", "data.spatial_dims=2 (received multiclass, 11, 1, 3)"),
    ("data.num_train=0", "'data.num_train': must be >= 1 (labeled training canvases; default 64) (received 0)"),
])
def test_digit_canvas_config_errors(tmp_path, override, fragment):
    with pytest.raises(ValueError) as err:
        SegmentationRecipe(load_config(CONFIG, [*TINY, override]))
    assert fragment in str(err.value)
