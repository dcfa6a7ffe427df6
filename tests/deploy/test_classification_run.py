"""A trained classification run leaves the library: portable run folders, RUN:best / RUN:last, load_run,
export in every format, and the exported folder in timm, ONNX Runtime and TorchScript without mmix_applied."""

from __future__ import annotations

import csv
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mmix_applied import load_run
from mmix_applied.cli import main
from mmix_applied.deploy import export_run
from mmix_applied.engine import load_checkpoint, runner
from tests.helpers.deploy_runs import chdir, classification_config, fresh_python, tree_digest, write_class_folders


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch timm run on class folders given by a RELATIVE path (data.path=data), and three inputs."""
    base = tmp_path_factory.mktemp("cls")
    inputs = write_class_folders(base)
    with chdir(base):
        run = runner.fit(classification_config(base / "runs" / "c"))
    return {"base": base, "run": run, "inputs": inputs}


def _csv_probs(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [Path(r["id"]).name for r in rows], np.array([[float(r[f"p_c{d}"]) for d in range(10)] for r in rows])


def test_checkpoints_hold_the_inference_record_and_the_config_absolute_paths(trained):
    run = trained["run"]
    saved = (run / "config.yaml").read_text()
    assert f"path: {trained['base'] / 'data'}" in saved  # typed as `data`, relative to the fit's folder
    record = load_checkpoint(run / "checkpoints" / "last.ckpt")["mmix"]
    inference = record["inference"]
    assert inference["task"] == "classification" and inference["classes"] == [f"c{d}" for d in range(10)]
    assert inference["model"] == {"family": "timm", "name": "test_resnet", "num_classes": 10, "in_channels": 1,
                                  "options": {}}
    assert inference["preprocessing"]["image_size"] == 28 and inference["preprocessing"]["mean"] == [0.5]
    assert record["config"]["data"]["path"] == str(trained["base"] / "data")


def test_a_copied_run_predicts_from_another_folder_with_its_training_data_gone(trained, tmp_path, capsys):
    """Old code re-read the class names from `data` (relative to the fit's folder): FileNotFoundError."""
    copy = shutil.copytree(trained["run"], tmp_path / "moved" / "c")
    data = trained["base"] / "data"
    data.rename(trained["base"] / "data.gone")
    try:
        with chdir(tmp_path):
            assert main(["predict", "--checkpoint", str(copy), "--input", str(trained["inputs"][0].parent),
                         "--output", "p.csv"]) == 0
            err = capsys.readouterr().err
            names, probs = _csv_probs(tmp_path / "p.csv")
            loaded = load_run(copy)
    finally:
        (trained["base"] / "data.gone").rename(data)
    best = json.loads((copy / "fit_summary.json").read_text())["best"]["checkpoint"]
    assert f"checkpoint: {copy / 'checkpoints' / Path(best).name} (best by val/loss" in err
    assert names == ["digit0.png", "digit1.png", "digit2.png"]
    assert loaded.classes == [f"c{d}" for d in range(10)]
    expected = loaded.predict([str(p) for p in trained["inputs"]]).numpy()
    assert np.allclose(probs, expected, atol=2e-6)  # the CSV holds 6 decimals


def test_test_runs_from_another_folder(trained, tmp_path, capsys):
    """The config's data path is absolute: `test` works from any working directory."""
    with chdir(tmp_path):
        assert main(["test", "--checkpoint", f"{trained['run']}:last"]) == 0
    out = capsys.readouterr()
    assert f"checkpoint: {trained['run'] / 'checkpoints' / 'last.ckpt'} (last epoch)" in out.err
    assert "test/acc" in out.out


def test_a_checkpoint_copied_alone_uses_the_config_stored_in_it(trained, tmp_path, capsys):
    """Old code used the defaults (resnet18) beside a test_resnet checkpoint and said 'omit -c' (no -c was given)."""
    alone = shutil.copy(trained["run"] / "checkpoints" / "last.ckpt", tmp_path / "model.ckpt")
    assert main(["predict", "--checkpoint", str(alone), "--input", str(trained["inputs"][0]),
                 "--output", str(tmp_path / "one.csv")]) == 0
    out = capsys.readouterr()
    assert "omit -c" not in out.err and f"checkpoint: {alone} (the file given)" in out.err
    names, probs = _csv_probs(tmp_path / "one.csv")
    assert names == ["digit0.png"]
    assert np.allclose(probs, load_run(alone).predict(str(trained["inputs"][0])).numpy(), atol=2e-6)


def test_run_best_and_run_last_pick_their_files(trained, tmp_path, capsys):
    run = trained["run"]
    best_name = Path(json.loads((run / "fit_summary.json").read_text())["best"]["checkpoint"]).name
    assert best_name.startswith("epoch")
    for spec, file in ((f"{run}:best", best_name), (f"{run}:last", "last.ckpt"), (str(run), best_name)):
        out = tmp_path / f"{file}.csv"
        assert main(["predict", "--checkpoint", spec, "--input", str(trained["inputs"][0].parent),
                     "--output", str(out)]) == 0
        assert f"checkpoint: {run / 'checkpoints' / file} (" in capsys.readouterr().err
        loaded = load_run(spec)
        assert loaded.source.path == run / "checkpoints" / file
        state = load_checkpoint(run / "checkpoints" / file)
        assert loaded.temperature == state["mmix"]["temperature"]  # each checkpoint's own temperature
        assert torch.equal(loaded.model.fc.weight, state["state_dict"]["model.fc.weight"])
        assert np.allclose(_csv_probs(out)[1], loaded.predict([str(p) for p in trained["inputs"]]).numpy(), atol=2e-6)
    assert runner.resolve_checkpoint(run) == run / "checkpoints" / "last.ckpt"  # --resume RUN: still the last one
    with pytest.raises(ValueError, match="unknown suffix ':bset'; valid: RUN:best, RUN:last"):
        load_run(f"{run}:bset")


@pytest.mark.slow
def test_load_run_and_predict_import_no_lightning(trained):
    code = textwrap.dedent(f"""
        import json, sys
        from mmix_applied import load_run
        run = load_run({str(trained['run'])!r})
        probs = run.predict({[str(p) for p in trained['inputs']]!r})
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))
        print(json.dumps({{"heavy": heavy, "shape": list(probs.shape), "training": run.model.training}}))
    """)
    found = fresh_python(code, cwd=trained["base"])
    assert found == {"heavy": [], "shape": [3, 10], "training": False}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "model"
    before = tree_digest(trained["run"])
    assert main(["export", "--checkpoint", str(trained["run"]), "--output", str(out)]) == 0
    assert tree_digest(trained["run"]) == before  # the run is never written to
    return out


def test_export_writes_every_format_matching_the_runs_own_predict(trained, exported):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.onnx",
                                                          "model.safetensors", "model.torchscript.pt"]
    assert not list(exported.parent.glob(".*"))  # no temporary folder left beside it
    config = json.loads((exported / "config.json").read_text())
    record = config["_mmix_applied"]
    run = load_run(trained["run"])
    assert record["temperature"] == run.temperature and record["classes"] == [f"c{d}" for d in range(10)]
    assert record["mix"]["variant"] == "manifold" and record["exports"]["onnx"]["max_abs_diff_vs_pytorch"] < 1e-4
    assert config["pretrained_cfg"]["mean"] == [0.5] and config["label_names"] == record["classes"]
    paths = [str(p) for p in trained["inputs"]]
    probs = run.predict(paths)
    again = load_run(exported)
    assert torch.equal(again.predict(paths), probs)
    from mmix_applied.deploy.preprocess import classification_batch

    batch = classification_batch(paths, run.preprocessing)
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, calibrated = session.run(None, {"input": batch.numpy()})
    assert [o.name for o in session.get_outputs()] == ["logits", "probs_calibrated"]
    assert np.abs(calibrated - probs.numpy()).max() < 1e-4
    with torch.no_grad():
        assert np.abs(logits - run.model(batch).numpy()).max() < 1e-4
    scripted = torch.jit.load(str(exported / "model.torchscript.pt"))
    assert torch.allclose(scripted(batch)[1], probs, atol=1e-6)
    assert torch.allclose(scripted(batch[:1])[1], probs[:1], atol=1e-6)  # any batch size
    card = (exported / "README.md").read_text()
    assert "underconfident" in card and f"T = {run.temperature:.4g}" in card and "c0" in card


@pytest.mark.slow
def test_the_exported_folder_loads_in_timm_ort_and_torchscript_without_mmix_applied(trained, exported, tmp_path):
    run = load_run(exported)
    batch = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        logits = run.model(torch.from_numpy(batch)).numpy()
    np.save(tmp_path / "batch.npy", batch)
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "probs.npy", run.probabilities(torch.from_numpy(logits), run.temperature).numpy())
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np, onnxruntime as ort, timm, torch
        folder = {str(exported)!r}
        batch, logits, probs = (np.load(f"{{n}}.npy") for n in ("batch", "logits", "probs"))
        cfg = json.load(open(f"{{folder}}/config.json"))
        model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=cfg["num_classes"],
                                  in_chans=cfg["model_args"]["in_chans"],
                                  pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file=f"{{folder}}/model.safetensors"))
        with torch.no_grad():
            timm_diff = float(np.abs(model.eval()(torch.from_numpy(batch)).numpy() - logits).max())
        data_cfg = timm.data.resolve_data_config(model=model)
        session = ort.InferenceSession(f"{{folder}}/model.onnx", providers=["CPUExecutionProvider"])
        ort_logits, ort_probs = session.run(None, {{"input": batch}})
        scripted = torch.jit.load(f"{{folder}}/model.torchscript.pt")
        ts_probs = scripted(torch.from_numpy(batch))[1].detach().numpy()
        print(json.dumps({{"timm": timm_diff, "ort": float(np.abs(ort_probs - probs).max()),
                          "ort_logits": float(np.abs(ort_logits - logits).max()),
                          "ts": float(np.abs(ts_probs - probs).max()), "mean": list(data_cfg["mean"]),
                          "mmix": "mmix_applied" in sys.modules}}))
    """)
    found = fresh_python(code, cwd=tmp_path)
    assert found["mmix"] is False and found["mean"] == [0.5]
    assert found["timm"] < 1e-5 and found["ort"] < 1e-4 and found["ort_logits"] < 1e-4 and found["ts"] < 1e-5


def test_export_refuses_bad_input_and_never_touches_the_run(trained, exported, tmp_path, capsys):
    run = trained["run"]
    before = tree_digest(run)
    assert main(["export", "--checkpoint", str(run), "--format", "onnx,tflite", "--output", str(tmp_path / "a")]) == 2
    assert "['tflite'] unknown; valid: safetensors, onnx, torchscript" in capsys.readouterr().err
    empty = tmp_path / "empty-run"
    (empty / "checkpoints").mkdir(parents=True)
    assert main(["export", "--checkpoint", str(empty), "--output", str(tmp_path / "b")]) == 2
    assert "has no checkpoints" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--output", str(exported)]) == 2
    assert "exists; choose a new folder, or pass --overwrite" in capsys.readouterr().err
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", "--checkpoint", str(run), "--output", str(mine), "--overwrite"]) == 2
    assert "is not an export of mmix-applied" in capsys.readouterr().err and (mine / "notes.txt").is_file()
    for target in (run, run / "checkpoints", run.parent):
        assert main(["export", "--checkpoint", str(run), "--output", str(target), "--overwrite"]) == 2
        assert "an export never writes there" in capsys.readouterr().err
    assert tree_digest(run) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written


def test_overwrite_replaces_a_previous_export_and_a_failure_keeps_it(trained, tmp_path, monkeypatch):
    out = export_run(trained["run"], tmp_path / "e", formats="safetensors")
    first = tree_digest(out)
    import mmix_applied.deploy.export as export_module

    def broken(*args, **kwargs):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(export_module, "to_torchscript", broken)
    with pytest.raises(RuntimeError, match="disk gone"):
        export_run(f"{trained['run']}:last", out, formats="torchscript", overwrite=True)
    assert tree_digest(out) == first and sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    monkeypatch.undo()
    export_run(f"{trained['run']}:last", out, formats=["torchscript"], overwrite=True)
    assert (out / "model.torchscript.pt").is_file()
    assert json.loads((out / "config.json").read_text())["_mmix_applied"]["source"]["checkpoint"].endswith("last.ckpt")
