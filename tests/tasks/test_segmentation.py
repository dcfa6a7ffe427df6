"""The segmentation recipe: metrics against MONAI/torch, sliding windows, a 2D fit, predict files."""

import json

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmix_applied.config import load_config
from mmix_applied.metrics import SegmentationMetrics
from mmix_applied.models.sliding_window import SlidingWindowNet
from mmix_applied.tasks.segmentation import SegmentationRecipe


def test_metrics_match_monai_dice_and_torch_nll():
    from monai.metrics import DiceMetric
    from torchmetrics.classification import MulticlassCalibrationError

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 8, 8, generator=g) * 2, torch.randint(0, 3, (2, 8, 8), generator=g)) for _ in range(2)]
    batches[1][1][1] = 0  # classes 1 and 2 absent from one sample: skipped, not counted as zero
    for _, y in batches:
        y[:, 0, :3] = 255
    metric = SegmentationMetrics(num_classes=3, ignore_index=255, class_names=["bg", "a", "b"])
    dice = DiceMetric(include_background=True, reduction="mean_batch", ignore_empty=True)
    ece = MulticlassCalibrationError(num_classes=3, n_bins=15, ignore_index=255)
    nll_sum, count = 0.0, 0
    for logits, y in batches:
        metric.update(logits, y)
        valid = (y != 255).unsqueeze(1)
        clean = torch.where(y == 255, 0, y)
        onehot = lambda t: F.one_hot(t, 3).movedim(-1, 1) * valid  # noqa: E731
        dice(onehot(logits.argmax(1)), onehot(clean))
        ece.update(logits.softmax(1), y)
        nll_sum += F.cross_entropy(logits, y, ignore_index=255, reduction="sum").item()
        count += int((y != 255).sum())
    out = metric.compute()
    expected = dice.aggregate()
    for i, name in enumerate(["bg", "a", "b"]):
        assert out[f"dice_{name}"].item() == pytest.approx(expected[i].item(), abs=1e-6)
    assert out["mean_dice"].item() == pytest.approx(expected[1:].mean().item(), abs=1e-6)
    assert out["nll"].item() == pytest.approx(nll_sum / count, rel=1e-5)
    assert out["ece"].item() == pytest.approx(ece.compute().item(), abs=1e-5)


def test_multilabel_metrics():
    from monai.metrics import DiceMetric

    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(2, 2, 6, 6, generator=g), torch.randint(0, 2, (2, 2, 6, 6), generator=g).float()
    metric = SegmentationMetrics(num_classes=2, mode="multilabel")
    metric.update(logits, y)
    out = metric.compute()
    dice = DiceMetric(include_background=True, reduction="mean_batch")
    dice((logits > 0).float(), y)
    assert torch.allclose(torch.stack([out["dice_class0"], out["dice_class1"]]), dice.aggregate().float(), atol=1e-6)
    assert out["nll"].item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, y).item(), rel=1e-5)


def test_sliding_window_net_eval_train_and_mixing():
    from monai.inferers import sliding_window_inference

    from mmix_applied import ManifoldMixup
    from mmix_applied.models import create_model

    net = create_model("monai", "unet", num_classes=3, in_channels=1, spatial_dims=3, channels=(4, 8), strides=(2,),
                       num_res_units=0)
    model = SlidingWindowNet(net, roi_size=[8, 8, 4], sw_batch_size=2)
    x = torch.randn(2, 1, 12, 10, 6)
    model.eval()
    with torch.no_grad():
        expected = sliding_window_inference(x, (8, 8, 4), 2, net, overlap=0.25, mode="gaussian")
        assert torch.allclose(model(x), expected)
    model.train()
    patch = torch.randn(4, 1, 8, 8, 4)
    assert torch.allclose(model(patch), net(patch))
    assert model.mix_points().all[0].startswith("net.") and model.backbone_names() == model.mix_points().all
    mixer = ManifoldMixup(model, points="auto", seed=0)
    assert mixer.points[0] == "input" and all(p.startswith("net.") for p in mixer.points[1:])
    out, plan = mixer(patch)
    assert plan is not None and out.shape == (4, 3, 8, 8, 4)
    mixer.close()


def write_folder(root, n=4, size=(20, 28)):
    rng = np.random.default_rng(0)
    for sub in ("img", "msk"):
        (root / sub).mkdir()
    for i in range(n):
        mask = np.zeros(size, np.uint8)
        mask[rng.integers(0, 8):, rng.integers(0, 10):rng.integers(14, 28)] = 1
        mask[:4, :4] = 2
        cv2.imwrite(str(root / "img" / f"c{i}.png"), (mask * 100 + rng.integers(0, 20, size)).astype(np.uint8))
        cv2.imwrite(str(root / "msk" / f"c{i}.png"), mask)
    return str(root / "img"), str(root / "msk")


def folder_config(tmp_path, variant="manifold"):
    img, msk = write_folder(tmp_path)
    data = {"source": "folders", "num_classes": 3, "in_channels": 1, "batch_size": 2}
    for split in ("train", "val", "test"):
        data[f"{split}_images"], data[f"{split}_masks"] = img, msk
    return load_config({
        "recipe": "segmentation",
        "run": {"dir": str(tmp_path / "runs"), "name": "t"},
        "model": {"family": "smp", "name": "unet", "options": {"encoder_name": "resnet18", "encoder_depth": 2}},
        "mix": {"variant": variant},
        "train": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "accelerator": "cpu",
                  "enable_progress_bar": False, "loggers": ["csv"]},
        "data": data,
    })


def test_2d_fit_and_predict_through_engine(tmp_path):
    from mmix_applied.engine.runner import fit, predict

    cfg = folder_config(tmp_path)
    run_dir = fit(cfg)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    log = (run_dir / "logs" / "metrics.csv").read_text()
    assert "val/mean_dice" in log and "val/dice_class1" in log and "val/ece" in log
    import csv

    rows = list(csv.DictReader(log.splitlines()))
    assert [float(r["train/mixed"]) for r in rows if r.get("train/mixed")] == [1.0]  # both steps mixed
    # one pixel-wise temperature per checkpoint; test reports HD95 and the pixel NLL / ECE raw and scaled
    from mmix_applied.engine.runner import test

    saved = json.loads((run_dir / "temperature.json").read_text())
    assert saved["positions"] > 0 and saved["temperature"] > 0
    metrics = test(cfg, checkpoint="last")
    assert metrics["temperature"] == saved["temperature"]
    assert {"test/nll", "test/nll_scaled", "test/ece", "test/ece_scaled", "test/mean_dice", "test/mean_hd95",
            "test/hd95_class1"} <= set(metrics)
    assert "test/mean_dice_scaled" not in metrics  # Dice does not move under a temperature
    written = predict(cfg, checkpoint="last")
    rows = written.read_text().splitlines()
    assert rows[0] == "name,mask" and len(rows) == 5
    mask = cv2.imread(str(written.parent / rows[1].split(",")[1]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (20, 28) and mask.max() <= 2  # padding cropped off, class indices


def test_recipe_config_errors(tmp_path):
    with pytest.raises(ValueError, match="4 tissue classes"):
        SegmentationRecipe(load_config({"recipe": "segmentation", "data": {"num_classes": 3}}))
    recipe = SegmentationRecipe(load_config({"recipe": "segmentation", "data": {"source": "folders"}}))
    with pytest.raises(ValueError, match="data.train_images"):
        recipe.build_datamodule().train_dataloader()


class IntensityClassifier(nn.Module):
    """Logits ``-(x - 100 c)^2``: the class whose level (0, 100, 200) is nearest to the voxel."""

    def forward(self, x):
        levels = torch.tensor([0.0, 100.0, 200.0]).view(1, 3, 1, 1, 1)
        return -((x - levels) ** 2) / 100.0


def test_3d_predict_maps_back_to_input_grid_and_affine(tmp_path):
    affine = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])  # LAS, anisotropic
    label = np.zeros((12, 10, 6), np.uint8)
    label[1:6, 2:8, 1:5], label[2:4, 4:6, 2:4] = 1, 2  # asymmetric: a wrong flip would show
    nib.save(nib.Nifti1Image((label * 100.0).astype(np.float32), affine), str(tmp_path / "vol.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "lab.nii.gz"))
    pair = [{"image": "vol.nii.gz", "label": "lab.nii.gz"}]
    (tmp_path / "d.json").write_text(json.dumps({"training": pair, "validation": pair, "test": pair}))
    cfg = load_config({"recipe": "segmentation", "model": {"family": "monai", "name": "unet"},
                       "data": {"source": "datalist", "spatial_dims": 3, "num_classes": 3, "datalist": str(tmp_path / "d.json"),
                                "pixdim": [1.0, 1.0, 1.5], "intensity_range": [0, 1000], "patch_size": [8, 8, 4]}})
    recipe = SegmentationRecipe(cfg)
    model = SlidingWindowNet(IntensityClassifier(), roi_size=[8, 8, 4]).eval()
    dm = recipe.build_datamodule(predict_input=str(tmp_path / "vol.nii.gz"))
    rows = [recipe.predict_step(_scale_back(model), batch) for batch in dm.predict_dataloader()]
    written = recipe.write_predictions(rows, tmp_path / "out" / "predictions.csv")
    out = nib.load(str(written.parent / "predictions" / "vol_seg.nii.gz"))
    assert out.shape == label.shape and np.allclose(out.affine, affine)
    assert (out.get_fdata() == label).mean() > 0.97  # resampled, predicted, resampled back
    val = next(iter(recipe.build_datamodule().val_dataloader()))
    x, y = recipe.split_batch(val)
    assert x.shape[1:] == (1, 23, 19, 11) and y.shape == (1, 23, 19, 11) and y.dtype == torch.int64
    assert type(val["image"]) is not torch.Tensor and type(x) is torch.Tensor  # MetaTensors read as plain tensors


def _scale_back(model):
    """Undo ``intensity_range`` scaling ([0, 1000] -> [0, 1]) so the classifier sees label * 100."""

    class Scaled(nn.Module):
        def forward(self, x):
            return model(x * 1000.0)

    return Scaled().eval()


@pytest.mark.parametrize("mode,classes", [("binary", 1), ("multilabel", 2)])
def test_2d_predict_files_binary_and_multilabel(tmp_path, mode, classes):
    cfg = load_config({"recipe": "segmentation",
                       "data": {"source": "folders", "mode": mode, "num_classes": classes, "in_channels": 1}})
    recipe = SegmentationRecipe(cfg)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    model = lambda t: torch.cat([t - 0.5, 0.5 - t][:classes], dim=1)  # noqa: E731
    rows = recipe.predict_step(model, (x, ["a", "b"], torch.tensor([[20, 28], [32, 32]])))
    written = recipe.write_predictions([rows], tmp_path / "predictions.csv")
    expected = (x[0, 0, :20, :28] > 0.5).numpy()
    if mode == "binary":
        mask = cv2.imread(str(tmp_path / "predictions" / "a.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, expected * 255)
    else:
        second = cv2.imread(str(tmp_path / "predictions" / "a_label1.png"), cv2.IMREAD_UNCHANGED)
        assert second.shape == (20, 28) and np.array_equal(second, (~expected) * 255)
    assert len(written.read_text().splitlines()) == 3


@pytest.mark.parametrize("row", [
    {"name": "slice", "mask": np.arange(12, dtype=np.int64).reshape(3, 4)},
    {"name": "labels", "mask": np.ones((2, 3, 4), dtype=np.uint8)},
    {"name": "volume", "mask": np.ones((3, 4, 5), dtype=np.uint8), "affine": np.eye(4)},
])
def test_predicted_masks_are_written_atomically(tmp_path, monkeypatch, row):
    """A write that fails before its rename (here: fsync) leaves no file, complete or partial, behind."""
    from mmix_applied.tasks import segmentation
    from mmix_applied.utils import atomic

    def failing(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "fsync", failing)
        with pytest.raises(OSError, match="No space left"):
            segmentation._write_mask(row, tmp_path, binary=False)
    assert list(tmp_path.iterdir()) == []
    written = segmentation._write_mask(row, tmp_path, binary=False)
    if "affine" in row:
        assert np.array_equal(nib.load(str(written)).get_fdata(), row["mask"])
    else:
        first = row["mask"] if row["mask"].ndim == 2 else row["mask"][0] * 255
        assert np.array_equal(cv2.imread(str(written), cv2.IMREAD_UNCHANGED), first)
