"""A CRNN handwriting run leaves the library: load_run reads lines as the run's own predict does, and the
ONNX (dynamic batch and width) and TorchScript exports decode to the same strings."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from mmix_applied import load_run
from mmix_applied.data.charset import Charset
from mmix_applied.deploy import export_run
from mmix_applied.deploy.preprocess import line_batch
from mmix_applied.engine import load_checkpoint, runner
from tests.helpers.deploy_runs import handwriting_config, write_line_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("hw")
    return {"base": base, "lines": write_line_images(base / "lines"),
            "run": runner.fit(handwriting_config(base / "runs" / "h"))}


def test_load_run_reads_the_lines_as_the_runs_own_predict(trained, tmp_path):
    run_dir = trained["run"]
    record = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["mmix"]["inference"]
    assert record["charset"] == "0123456789" and record["preprocessing"]["height"] == 32
    assert record["model"]["options"]["img_height"] == 32  # the recipe's builder option, recorded
    written = runner.predict(runner.config_of_checkpoint(run_dir / "checkpoints" / "last.ckpt"), checkpoint=run_dir,
                             input=str(trained["lines"][0].parent), output=tmp_path / "lines.csv")
    with written.open(newline="", encoding="utf-8") as fh:  # path,text (a CSV: texts may hold tabs or commas)
        own = {row["path"]: row["text"] for row in csv.DictReader(fh)}
    run = load_run(run_dir)
    assert run.temperature is None and run.charset == Charset("0123456789")
    paths = sorted(str(p) for p in trained["lines"])
    texts = run.predict(paths, batch_size=4)  # the run's data.eval_batch_size: lines padded per batch alike
    assert texts == [own[p] for p in paths]


def test_export_onnx_and_torchscript_decode_the_same_strings_at_any_width(trained, tmp_path):
    out = export_run(trained["run"], tmp_path / "crnn")
    config = json.loads((out / "config.json").read_text())
    assert config["_mmix_applied"]["exports"]["onnx"]["outputs"] == ["log_probs"]
    lengths = config["output_lengths"]
    run = load_run(out)
    paths = sorted(str(p) for p in trained["lines"])
    batch, widths = line_batch(paths, run.preprocessing)
    assert len(set(widths.tolist())) > 1 and batch.shape[-1] != 128  # lines of their own widths, not the traced one
    assert config["_mmix_applied"]["exports"]["onnx"]["exporter"] == "torchscript"  # LSTM over a dynamic width
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    with torch.no_grad():
        expected = run.model(batch)
    for x in (batch, batch[:1]):
        got = session.run(None, {"input": x.numpy()})[0]
        assert np.abs(got - expected[:, : len(x)].numpy()).max() < 1e-4
        assert torch.allclose(scripted(x), expected[:, : len(x)], atol=1e-5)
    steps = torch.div(widths + lengths["offset"], lengths["stride"], rounding_mode="floor")  # config.json's rule
    assert torch.equal(steps, run.model.output_lengths(widths))
    one, width = line_batch(paths[:1], run.preprocessing)  # one line alone: no padding
    log_probs = torch.from_numpy(session.run(None, {"input": one.numpy()})[0])
    steps = torch.div(width + lengths["offset"], lengths["stride"], rounding_mode="floor")
    assert Charset(config["_mmix_applied"]["charset"]).decode_ctc(log_probs, steps) == run.predict(paths[:1])
