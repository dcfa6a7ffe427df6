"""Segmentation runs leave the library: 2D smp and 3D MONAI, load_run against the run's own predict, every
export format, and the folders in smp, MONAI and ONNX Runtime without mmix_applied."""

from __future__ import annotations

import json
import shutil
import textwrap

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

from mmix_applied import load_run
from mmix_applied.deploy import export_run
from mmix_applied.engine import runner
from tests.helpers.deploy_runs import (
    fresh_python,
    segmentation_2d_config,
    segmentation_3d_config,
    write_segmentation_folders,
    write_volumes,
)


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg2d")
    images, masks = write_segmentation_folders(base / "data")
    return {"base": base, "images": images, "run": runner.fit(segmentation_2d_config(base / "runs" / "s", images,
                                                                                       masks))}


def test_2d_load_run_matches_the_runs_own_predict_after_the_data_is_gone(run_2d, tmp_path):
    moved = shutil.copytree(run_2d["run"], tmp_path / "moved")
    inputs = shutil.copytree(run_2d["images"], tmp_path / "inputs")
    shutil.rmtree(run_2d["base"] / "data" / "msk")  # the training masks are gone; images to predict remain
    written = runner.predict(runner.config_of_checkpoint(moved / "checkpoints" / "last.ckpt"), checkpoint=moved,
                             input=str(inputs), output=tmp_path / "out" / "predictions.csv")
    run = load_run(moved)
    assert run.classes == ["bg", "a", "b"] and run.model.training is False
    files = sorted(inputs.glob("*.png"))
    found = run.predict([str(f) for f in files])
    for file, mask, probs in zip(files, found.masks, found.probs):
        own = cv2.imread(str(written.parent / "predictions" / file.name), cv2.IMREAD_UNCHANGED)
        assert own.shape == (20, 28) and torch.equal(mask, torch.from_numpy(own))
        assert probs.shape == (3, 20, 28) and torch.allclose(probs.sum(0), torch.ones(20, 28), atol=1e-5)
        assert torch.equal(probs.argmax(0).to(torch.uint8), mask)  # a temperature does not move the argmax
    array = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert torch.equal(run.predict(array).masks[0], found.masks[0])  # an array as read from the file


@pytest.mark.slow
def test_2d_export_loads_in_smp_and_onnx_runtime_without_mmix_applied(run_2d, tmp_path):
    out = export_run(run_2d["run"], tmp_path / "unet")
    config = json.loads((out / "config.json").read_text())
    assert config["_model_class"] == "Unet" and config["encoder_depth"] == 2 and config["classes"] == 3
    run = load_run(out)
    batch = np.random.default_rng(0).normal(size=(2, 1, 32, 64)).astype(np.float32)  # not the traced size
    with torch.no_grad():
        logits = run.model(torch.from_numpy(batch)).numpy()
    probs = run.probabilities(torch.from_numpy(logits), run.temperature).numpy()
    np.save(tmp_path / "batch.npy", batch), np.save(tmp_path / "logits.npy", logits), np.save(tmp_path / "probs.npy", probs)
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np, onnxruntime as ort, segmentation_models_pytorch as smp, torch
        folder = {str(out)!r}
        batch, logits, probs = (np.load(f"{{n}}.npy") for n in ("batch", "logits", "probs"))
        model = smp.from_pretrained(folder).eval()
        with torch.no_grad():
            smp_diff = float(np.abs(model(torch.from_numpy(batch)).numpy() - logits).max())
        session = ort.InferenceSession(f"{{folder}}/model.onnx", providers=["CPUExecutionProvider"])
        ort_logits, ort_probs = session.run(None, {{"input": batch}})
        scripted = torch.jit.load(f"{{folder}}/model.torchscript.pt")
        ts_probs = scripted(torch.from_numpy(batch))[1].detach().numpy()
        print(json.dumps({{"smp": smp_diff, "ort": float(np.abs(ort_probs - probs).max()),
                          "ort_logits": float(np.abs(ort_logits - logits).max()),
                          "ts": float(np.abs(ts_probs - probs).max()), "mmix": "mmix_applied" in sys.modules}}))
    """)
    found = fresh_python(code, cwd=tmp_path)
    assert found["mmix"] is False
    assert found["smp"] < 1e-5 and found["ort"] < 1e-4 and found["ort_logits"] < 1e-4 and found["ts"] < 1e-5


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg3d")
    datalist = write_volumes(base / "data")
    return {"base": base, "volume": base / "data" / "vol.nii.gz",
            "run": runner.fit(segmentation_3d_config(base / "runs" / "v", datalist))}


def test_3d_load_run_matches_the_runs_own_predict_on_the_input_grid(run_3d, tmp_path):
    run_dir = run_3d["run"]
    written = runner.predict(runner.config_of_checkpoint(run_dir / "checkpoints" / "last.ckpt"), checkpoint=run_dir,
                             input=str(run_3d["volume"]), output=tmp_path / "predictions.csv")
    own = nib.load(str(written.parent / "predictions" / "vol_seg.nii.gz"))
    run = load_run(run_dir)
    assert run.info.sliding_window == {"roi_size": [16, 16, 8], "sw_batch_size": 2, "overlap": 0.25, "mode": "gaussian"}
    assert type(run.model).__name__ == "UNet"  # the plain network; predict slides windows around it
    found = run.predict([str(run_3d["volume"])])
    assert found.masks[0].shape == (14, 12, 8) == own.shape  # back on the input's anisotropic grid
    assert np.array_equal(found.masks[0].numpy(), np.asarray(own.dataobj)) and np.allclose(found.affines[0], own.affine)
    assert found.probs[0].shape == (3, 14, 12, 8)


@pytest.mark.slow
def test_3d_export_loads_in_monai_and_onnx_runtime_without_mmix_applied(run_3d, tmp_path):
    out = export_run(run_3d["run"], tmp_path / "unet3d")
    config = json.loads((out / "config.json").read_text())
    assert config["network_def"]["_target_"] == "monai.networks.nets.UNet"
    run = load_run(out)
    volume = np.random.default_rng(0).normal(size=(1, 1, 24, 20, 12)).astype(np.float32)
    expected = run.predict(torch.from_numpy(volume), raw=True).probs[0].numpy()
    np.save(tmp_path / "volume.npy", volume), np.save(tmp_path / "expected.npy", expected)
    window = volume[:, :, :16, :16, :8].repeat(3, axis=0)  # three windows: the batch axis is dynamic
    with torch.no_grad():
        np.save(tmp_path / "window_logits.npy", run.model(torch.from_numpy(window)).numpy())
    np.save(tmp_path / "window.npy", window)
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np, onnxruntime as ort, torch
        from monai.bundle import ConfigParser
        from monai.inferers import sliding_window_inference
        from safetensors.torch import load_file
        folder = {str(out)!r}
        parser = ConfigParser(json.load(open(f"{{folder}}/config.json")))
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(load_file(f"{{folder}}/model.safetensors"))
        net.eval()
        volume, expected = np.load("volume.npy"), np.load("expected.npy")
        with torch.no_grad():
            logits = sliding_window_inference(torch.from_numpy(volume), [16, 16, 8], 2, net, overlap=0.25, mode="gaussian")
        monai_diff = float(np.abs(torch.softmax(logits, 1)[0].numpy() - expected).max())
        session = ort.InferenceSession(f"{{folder}}/model.onnx", providers=["CPUExecutionProvider"])
        ort_logits = session.run(["logits"], {{"input": np.load("window.npy")}})[0]
        def onnx_net(x):
            return torch.from_numpy(session.run(["logits"], {{"input": x.numpy()}})[0])
        with torch.no_grad():
            slid = sliding_window_inference(torch.from_numpy(volume), [16, 16, 8], 2, onnx_net, overlap=0.25,
                                            mode="gaussian")
        print(json.dumps({{"monai": monai_diff, "ort": float(np.abs(ort_logits - np.load("window_logits.npy")).max()),
                          "ort_slid": float(np.abs(torch.softmax(slid, 1)[0].numpy() - expected).max()),
                          "mmix": "mmix_applied" in sys.modules}}))
    """)
    found = fresh_python(code, cwd=tmp_path)
    assert found["mmix"] is False and found["monai"] < 1e-5 and found["ort"] < 1e-4 and found["ort_slid"] < 1e-4
