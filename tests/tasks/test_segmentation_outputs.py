"""Segmentation outputs a person reads: HD95 in mm (MONAI's spacing), colour overlays and probability maps."""

import json

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance
from torch import nn

from mmix_applied.cli import main
from mmix_applied.config import load_config, save_config
from mmix_applied.metrics import SegmentationMetrics
from mmix_applied.models.sliding_window import SlidingWindowNet
from mmix_applied.reports.overlays import PALETTE, colour_overlay
from mmix_applied.tasks.segmentation import SegmentationRecipe


def _blobs(shape, shift):
    truth = torch.zeros(shape, dtype=torch.long)
    pred = torch.zeros(shape, dtype=torch.long)
    sl = tuple(slice(2, s - 2) for s in shape[1:])
    truth[(slice(None), *sl)] = 1
    moved = tuple(slice(2 + d, s - 2 + d) for s, d in zip(shape[1:], shift))
    pred[(slice(None), *moved)] = 1
    return pred, truth


@pytest.mark.parametrize("shape, spacing, shift", [((2, 12, 16), (3.0, 0.5), (2, 0)),
                                                   ((1, 10, 10, 8), (1.0, 1.0, 4.0), (0, 0, 1))])
def test_hd95_is_in_mm_with_the_spacing_as_monai_measures_it(shape, spacing, shift):
    pred, truth = _blobs(shape, shift)
    logits = torch.nn.functional.one_hot(pred, 2).movedim(-1, 1).float() * 4
    metric = SegmentationMetrics(num_classes=2, hd95=True, spacing=spacing)
    metric.update(logits, truth)
    onehot = lambda t: torch.nn.functional.one_hot(t, 2).movedim(-1, 1).float()  # noqa: E731
    ref = compute_hausdorff_distance(onehot(pred), onehot(truth), include_background=True, percentile=95,
                                     spacing=list(spacing))
    got = metric.compute()
    assert got["hd95_class1"].item() == pytest.approx(ref[:, 1].mean().item(), rel=1e-5)
    assert got["hd95_class1"].item() == pytest.approx(2 * spacing[0] if len(shape) == 3 else spacing[2], rel=1e-5)
    assert metric.hd95_unit == "mm"
    voxels = SegmentationMetrics(num_classes=2, hd95=True)
    voxels.update(logits, truth)
    assert voxels.hd95_unit == ("pixels" if len(shape) == 3 else "voxels")
    assert voxels.compute()["hd95_class1"].item() == pytest.approx(max(shift), rel=1e-5)  # index units
    with pytest.raises(ValueError, match="spacing must give"):
        SegmentationMetrics(num_classes=2, hd95=True, spacing=(1.0,)).update(logits, truth)


class IntensityClassifier(nn.Module):
    """Logits ``-(x - 100 c)^2``: the class whose level (0, 100, 200) is nearest to the voxel."""

    def forward(self, x):
        levels = torch.tensor([0.0, 100.0, 200.0]).view(1, 3, 1, 1, 1)
        return -((x * 1000.0 - levels) ** 2) / 100.0  # intensity_range [0, 1000] scaled x to [0, 1]


def _datalist(tmp_path, pixdim):
    affine = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])  # anisotropic voxels
    label = np.zeros((12, 10, 6), np.uint8)
    label[1:6, 2:8, 1:5], label[2:4, 4:6, 2:4] = 1, 2
    nib.save(nib.Nifti1Image((label * 100.0).astype(np.float32), affine), str(tmp_path / "vol.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "lab.nii.gz"))
    pair = [{"image": "vol.nii.gz", "label": "lab.nii.gz"}]
    (tmp_path / "d.json").write_text(json.dumps({"training": pair, "validation": pair, "test": pair}))
    return {"source": "datalist", "spatial_dims": 3, "num_classes": 3, "datalist": str(tmp_path / "d.json"),
            "pixdim": pixdim, "intensity_range": [0, 1000], "patch_size": [8, 8, 4]}


@pytest.mark.parametrize("pixdim, spacing", [([1.0, 1.0, 1.5], [1.0, 1.0, 1.5]), (None, [2.0, 2.0, 3.0])])
def test_3d_hd95_takes_each_volumes_spacing_from_its_affine(tmp_path, pixdim, spacing):
    cfg = load_config({"recipe": "segmentation", "model": {"family": "monai", "name": "unet"},
                       "data": _datalist(tmp_path, pixdim)})
    recipe = SegmentationRecipe(cfg)
    assert recipe.pixel_spacing() == (pixdim and [float(v) for v in pixdim])
    batch = next(iter(recipe.build_datamodule().test_dataloader()))
    x, y = recipe.split_batch(batch)
    logits = torch.roll(torch.nn.functional.one_hot(y, 3).movedim(-1, 1).float(), shifts=1, dims=2) * 5
    metric = recipe.build_metrics("test")
    recipe.update_metrics(metric, logits, y)
    onehot = lambda t: torch.nn.functional.one_hot(t, 3).movedim(-1, 1).float()  # noqa: E731
    ref = compute_hausdorff_distance(onehot(logits.argmax(1)), onehot(y), include_background=True, percentile=95,
                                     spacing=spacing)  # the resampled (or the file's own) voxel size
    got = metric.compute()
    assert got["hd95_class1"].item() == pytest.approx(ref[0, 1].item(), rel=1e-5) and metric.hd95_unit == "mm"
    assert ref[0, 1].item() == pytest.approx(spacing[0], rel=1e-5)  # a one-voxel shift along the first axis


def test_2d_overlays_and_probability_maps_beside_the_masks(tmp_path):
    cfg = load_config({"recipe": "segmentation", "options": {"overlays": True},
                       "data": {"source": "folders", "num_classes": 3, "in_channels": 1}})
    recipe = SegmentationRecipe(cfg)
    recipe.temperature = 2.0  # the engine sets the checkpoint's temperature (None: --raw)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g) * 3
    logits = torch.cat([torch.zeros_like(x), x - 1, 3 * (x - 2)], 1)  # class 0 below 1, 1 in (1, 2.5), 2 above
    rows = recipe.predict_step(lambda t: logits, (x, ["a", "b"], torch.tensor([[20, 28], [32, 32]])))
    written = recipe.write_predictions([rows], tmp_path / "predictions.csv")
    table = written.read_text().splitlines()
    assert table[0] == "name,mask,overlay,probabilities" and table[1].split(",")[2:] == [
        "predictions/a_overlay.png", "predictions/a_probs.npy"]
    probs = np.load(tmp_path / "predictions" / "a_probs.npy")
    expected = torch.softmax(logits[0, :, :20, :28] / 2.0, 0).numpy()
    assert probs.dtype == np.float16 and probs.shape == (3, 20, 28)
    assert np.allclose(probs, expected, atol=1e-3)  # calibrated by T, cropped as the mask
    mask = cv2.imread(str(tmp_path / "predictions" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(mask, expected.argmax(0))
    overlay = cv2.imread(str(tmp_path / "predictions" / "a_overlay.png"))[..., ::-1]  # RGB
    grey = x[0, 0, :20, :28].numpy()
    grey = np.round((grey - grey.min()) / (grey.max() - grey.min()) * 255)
    for k in (1, 2):  # painted pixels: half the grey, half the class colour
        where = mask == k
        blend = np.round(0.5 * grey[where][:, None] + 0.5 * PALETTE[k][None].astype(float))
        assert np.abs(overlay[where].astype(float) - blend).max() <= 1
    assert np.array_equal(overlay[mask == 0][:, 0], overlay[mask == 0][:, 1])  # background stays grey
    assert np.array_equal(colour_overlay(x[0, :, :20, :28].numpy(), mask), overlay)


def test_overlays_are_off_by_default_and_the_cli_flag_turns_them_on(tmp_path, capsys):
    cfg = load_config({"recipe": "segmentation", "data": {"source": "folders", "num_classes": 3}})
    recipe = SegmentationRecipe(cfg)
    rows = recipe.predict_step(lambda t: torch.cat([t, -t, t * 0], 1),
                               (torch.rand(1, 1, 8, 8), ["a"], torch.tensor([[8, 8]])))
    recipe.write_predictions([rows], tmp_path / "p" / "predictions.csv")
    assert (tmp_path / "p" / "predictions.csv").read_text().splitlines()[0] == "name,mask"
    assert sorted(f.name for f in (tmp_path / "p" / "predictions").iterdir()) == ["a.png"]  # unchanged default
    run = tmp_path / "run"
    save_config(cfg, run / "config.yaml")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert main(["predict", "--checkpoint", str(run), "--overlays", "--print-config"]) == 0
    assert "overlays: true" in capsys.readouterr().out


def test_3d_overlay_and_probability_nifti(tmp_path):
    cfg = load_config({"recipe": "segmentation", "model": {"family": "monai", "name": "unet"},
                       "options": {"overlays": True}, "data": _datalist(tmp_path, [1.0, 1.0, 1.5])})
    recipe = SegmentationRecipe(cfg)
    model = SlidingWindowNet(IntensityClassifier(), roi_size=[8, 8, 4]).eval()
    dm = recipe.build_datamodule(predict_input=str(tmp_path / "vol.nii.gz"))
    rows = [recipe.predict_step(model, batch) for batch in dm.predict_dataloader()]
    written = recipe.write_predictions(rows, tmp_path / "out" / "predictions.csv")
    seg = nib.load(str(written.parent / "predictions" / "vol_seg.nii.gz"))
    probs = nib.load(str(written.parent / "predictions" / "vol_probs.nii.gz"))
    assert probs.shape == (*seg.shape, 3) and np.allclose(probs.affine, seg.affine)  # the input's grid, classes last
    p = np.asarray(probs.dataobj, dtype=np.float32)
    assert np.allclose(p.sum(-1), 1, atol=2e-2) and (p.argmax(-1) == seg.get_fdata()).mean() > 0.97
    overlay = cv2.imread(str(written.parent / "predictions" / "vol_overlay.png"))
    assert overlay.ndim == 3 and overlay.shape[2] == 3 and (overlay[..., 0] != overlay[..., 1]).any()  # coloured
