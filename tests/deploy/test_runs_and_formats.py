"""Which checkpoint a run spec names (RUN, RUN:best, RUN:last, a file), and the export formats on their own:
a model with a mixer attached exports as the plain model, the temperature folded into the second output."""

from __future__ import annotations

import functools
import io
import json
import os

import numpy as np
import pytest
import timm
import torch

from mmix_applied import ManifoldMixup
from mmix_applied.core.attachment import MixingForward
from mmix_applied.deploy import CalibratedOutputs, RunInfo, plain_copy, resolve_run_checkpoint, to_onnx, to_torchscript
from mmix_applied.deploy.formats import save_safetensors
from mmix_applied.utils.safe_load import CheckpointError


def _run(root, *, best: str | None = "epoch003.ckpt", files=("last.ckpt", "epoch003.ckpt")):
    (root / "checkpoints").mkdir(parents=True)
    for name in files:
        (root / "checkpoints" / name).write_bytes(b"x")
    if best is not None:  # fit_summary.json holds the path where the run was trained (another machine here)
        (root / "fit_summary.json").write_text(json.dumps({"monitor": "val/loss", "best": {
            "checkpoint": f"/elsewhere/runs/{root.name}/checkpoints/{best}", "epoch": 3, "score": 0.5}}))
    return root


def test_a_run_means_its_best_checkpoint_found_in_its_own_folder(tmp_path):
    run = _run(tmp_path / "r")
    found = resolve_run_checkpoint(run)
    assert found.path == run / "checkpoints" / "epoch003.ckpt" and found.which == "best" and found.run_dir == run
    assert found.describe() == (f"checkpoint: {run / 'checkpoints' / 'epoch003.ckpt'} (best by val/loss = 0.5 at "
                                "epoch 3; RUN:last for the last epoch's)")
    assert resolve_run_checkpoint(f"{run}:best").path == found.path
    last = resolve_run_checkpoint(f"{run}:last")
    assert last.path == run / "checkpoints" / "last.ckpt" and last.note == "last epoch"
    assert resolve_run_checkpoint(run, default="last").path == last.path
    file = resolve_run_checkpoint(run / "checkpoints" / "last.ckpt")
    assert file.which == "file" and file.run_dir == run


def test_without_a_recorded_best_a_run_means_last_and_says_why(tmp_path):
    unfinished = _run(tmp_path / "u", best=None)
    found = resolve_run_checkpoint(unfinished)
    assert found.path.name == "last.ckpt" and "no fit_summary.json (the fit did not finish)" in found.note
    with pytest.raises(FileNotFoundError, match=r"has no best checkpoint: no fit_summary.json .*; use .*u:last"):
        resolve_run_checkpoint(f"{unfinished}:best")
    gone = _run(tmp_path / "g", files=("last.ckpt",))
    assert "epoch003.ckpt is missing" in resolve_run_checkpoint(gone).note


def test_bad_specs_are_refused_with_what_is_valid(tmp_path):
    run = _run(tmp_path / "r")
    with pytest.raises(ValueError, match=r"unknown suffix ':latest'; valid: RUN:best, RUN:last"):
        resolve_run_checkpoint(f"{run}:latest")
    with pytest.raises(ValueError, match="applies to a run directory"):
        resolve_run_checkpoint(f"{run / 'checkpoints' / 'last.ckpt'}:best")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_run_checkpoint(tmp_path / "nowhere:best")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no checkpoints"):
        resolve_run_checkpoint(tmp_path / "empty")
    odd = _run(tmp_path / "odd:best")  # a folder whose name ends in :best is a folder
    assert resolve_run_checkpoint(odd).run_dir == odd


def test_a_checkpoint_without_an_inference_record_says_how_to_get_one():
    with pytest.raises(CheckpointError, match="without an inference record"):
        RunInfo.from_checkpoint({"state_dict": {}, "mmix": {"config": {}}}, source="old.ckpt")
    with pytest.raises(CheckpointError, match="lacks"):
        RunInfo.from_record({"task": "classification", "model": {"family": "timm"}})


def test_calibrated_outputs_fold_the_temperature():
    net = torch.nn.Conv2d(1, 3, 1)
    x = torch.randn(2, 1, 4, 4)
    logits, probs = CalibratedOutputs(net, temperature=2.5, activation="softmax")(x)
    assert torch.allclose(probs, torch.softmax(net(x) / 2.5, dim=1)) and torch.equal(logits, net(x))
    assert torch.allclose(CalibratedOutputs(net, temperature=None, activation="sigmoid")(x)[1], torch.sigmoid(net(x)))
    assert torch.equal(CalibratedOutputs(net, temperature=3.0, activation=None)(x), net(x))


def test_a_model_with_a_mixer_attached_exports_as_the_plain_model(tmp_path):
    model = timm.create_model("test_resnet", num_classes=3, in_chans=1).eval()
    mixer = ManifoldMixup(model, points="auto", alpha=1.0, seed=0)
    try:
        assert isinstance(model.__dict__.get("forward"), MixingForward)
        with pytest.raises(AttributeError, match="MixingForward"):  # why the plain copy: scripting the model fails
            torch.jit.script(model)
        plain = plain_copy(model)
        assert "forward" not in plain.__dict__ and not plain.training
        x = torch.randn(2, 1, 28, 28)
        with torch.no_grad():
            expected = torch.softmax(model(x) / 1.7, dim=1)
        exporter = to_onnx(model, tmp_path / "m.onnx", example=x, dynamic_axes={0: "batch"}, temperature=1.7)
        to_torchscript(model, tmp_path / "m.pt", example=x, temperature=1.7)
        save_safetensors(model, tmp_path / "m.safetensors")
        import onnxruntime as ort

        got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x[:1].numpy()})[1]
        assert exporter == "dynamo" and np.abs(got - expected[:1].numpy()).max() < 1e-5
        assert torch.allclose(torch.jit.load(str(tmp_path / "m.pt"))(x)[1], expected, atol=1e-6)
        from safetensors.torch import load_file

        assert load_file(str(tmp_path / "m.safetensors")).keys() == model.state_dict().keys()
        assert isinstance(model.__dict__.get("forward"), MixingForward)  # the user's model still mixes
        assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.pt", "m.safetensors"]  # atomic: no temporary file left
    finally:
        mixer.close()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, x), buffer)  # closed: the model is its plain self again


@pytest.mark.parametrize("which", ["image", "line"])
def test_arrays_that_are_not_uint8_are_refused_naming_the_item(which):
    from mmix_applied.deploy.preprocess import classification_batch, line_batch

    good, bad = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.float32)
    if which == "image":
        call = functools.partial(classification_batch, pre={"channels": 1, "image_size": 8, "mean": [0.5],
                                                            "std": [0.5]})
    else:
        call = functools.partial(line_batch, pre={"height": 8})
    assert len(call([good])) > 0  # the control: a uint8 array is taken
    with pytest.raises(ValueError, match=rf"^{which} 1: arrays are uint8 \(0-255\) .* received dtype float32"):
        call([good, bad])
