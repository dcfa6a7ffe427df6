"""``mmix_applied.compare``: the reliability bins it reads from prediction files, its argument
checks, and one tiny end-to-end run of 2 variants x 2 seeds that then resumes (the statistics and
the report are tested in tests/reports/test_comparison.py, the plots in tests/reports/test_figures.py)."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmix_applied import compare as compare_module
from mmix_applied.cli import main
from mmix_applied.compare import compare, read_predictions, reliability_bins
from mmix_applied.metrics import ExpectedCalibrationError
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
def test_reliability_bins_scale_probabilities_like_logits(tmp_path):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(200, 4, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 4, (200,), generator=g)
    bins = reliability_bins(torch.softmax(z, 1), y, temperature=2.5)
    ref = ExpectedCalibrationError(n_bins=15)  # independent path: the logits divided by T
    ref.update(z / 2.5, y)
    assert torch.allclose(bins["scaled"]["count"], ref.bins()["count"])
    assert torch.allclose(bins["scaled"]["confidence"].nan_to_num(), ref.bins()["confidence"].nan_to_num(),
                          atol=1e-6)
    assert "scaled" not in reliability_bins(torch.softmax(z, 1), y)
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,target,predicted,confidence,p_a,p_b\nx,b,b,0.7,0.3,0.7\ny,,a,0.6,0.6,0.4\n")
    probs, target = read_predictions(csv_path)
    assert probs.tolist() == [[0.3, 0.7]] and target.tolist() == [1]


def test_bad_arguments_say_what_was_received(tmp_path):
    with pytest.raises(ValueError, match="sets mix.variant.*received it in overrides"):
        compare(CONFIG, overrides=["mix.variant=none"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="received \\['none', 'mixup'\\]"):
        compare(CONFIG, variants=("none", "mixup"), out_dir=tmp_path)
    with pytest.raises(ValueError, match="seeds must be distinct integers"):
        compare(CONFIG, seeds=(0, 0), out_dir=tmp_path)


TINY = ["model.name=test_resnet", "train.max_epochs=1", "train.limit_train_batches=1", "train.limit_val_batches=1",
        "train.limit_test_batches=1", "train.limit_predict_batches=1", "data.labels_per_class=2", "data.batch_size=8",
        "data.eval_batch_size=16", "train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false",
        "train.loggers=[csv]", "train.log_every_n_steps=1"]


def test_compare_end_to_end_then_resume_without_training(tmp_path, monkeypatch, capsys):
    progress = []
    report = compare(CONFIG, variants=("none", "manifold"), seeds=(0, 1), overrides=TINY, out_dir=tmp_path,
                     command="mmix-applied compare -c classification.yaml", spectrum_point="layer2",
                     log=progress.append)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["seed"]) for r in rows] == [("none", 0), ("manifold", 0), ("none", 1), ("manifold", 1)]
    for r in rows:
        run = Path(r["run_dir"])
        assert r["metrics"] == json.loads((run / "test_metrics.json").read_text()) and "test/nll" in r["metrics"]
        for name in ("nll", "ece", "brier", "adaptive_ece"):  # raw and scaled side by side
            assert f"test/{name}_scaled" in r["metrics"]
        assert r["temperature"] == r["metrics"]["temperature"] == json.loads(
            (run / "temperature.json").read_text())["temperature"]
        with open(run / "predictions.csv", newline="") as fh:  # compare asks predict for raw probabilities
            assert {row["temperature"] for row in csv.DictReader(fh)} == {"1"}
        assert r["wall_s"] > 0 and r["extra"]["spectrum/mean_directions"] > 0
        assert (run / "config.yaml").is_file() and (run / "predictions.csv").is_file()
    # the variant changed only mix.variant; the seed only seed
    from mmix_applied.config import config_to_dict, load_config
    a, b = (config_to_dict(load_config(tmp_path / "runs" / n / "config.yaml"))
            for n in ("none-seed0", "manifold-seed0"))
    diff = {k for k in a if a[k] != b[k]}
    assert diff <= {"mix", "run"} and {k for k in a["mix"] if a["mix"][k] != b["mix"][k]} == {"variant"}
    assert progress[0].startswith("[1/4] none seed 0 ") and "ETA" in progress[1] and progress[2].startswith("[3/4]")
    text = report.read_text()
    assert text.splitlines()[3] == "mmix-applied compare -c classification.yaml" and "## classification" in text
    assert "| nll_scaled |" in text and "| temperature |" in text
    for png in ("classification_val_curves.png", "classification_reliability.png", "classification_spectra.png"):
        assert (tmp_path / png).is_file() and f"]({png})" in text
    # resume: nothing is fitted, tested or predicted again; the rows come back the same
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/checkpoints/*.ckpt")}

    real_fit, real_test = compare_module.fit, compare_module.test

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    for name in ("fit", "test", "predict", "_spectrum"):
        monkeypatch.setattr(compare_module, name, refuse)
    # the second pass goes through the CLI verb (every run is finished, so nothing may train)
    argv = ["compare", "-c", str(CONFIG), "--variants", "none,manifold", "--seeds", "0,1", "--out", str(tmp_path),
            "--spectrum-point", "layer2", *TINY]
    monkeypatch.setattr(sys, "argv", ["mmix-applied", *argv])
    assert main(argv) == 0
    out = capsys.readouterr().out
    again = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert again == rows and out.count("done, skipped") == 4 and f"report: {report}" in out
    assert (tmp_path / "report.md").read_text().splitlines()[3] == " ".join(["mmix-applied", *argv])
    # spectrum on two of the runs: printed per class and mean, saved, both on one figure
    runs = [tmp_path / "runs" / "none-seed0", tmp_path / "runs" / "manifold-seed0"]
    assert main(["spectrum", "--checkpoint", *map(str, runs), "--point", "layer2", "--out", str(tmp_path / "sp")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "sp" / "spectrum_layer2.png").read_bytes()[:4] == b"\x89PNG"
    for run, row in zip(runs, (rows[0], rows[1])):
        saved = json.loads((tmp_path / "sp" / f"{run.name}_layer2.json").read_text())
        for cls, values in saved["singular_values"].items():  # 90 % of the variance, by numpy
            share = np.cumsum(np.square(values)) / np.square(values).sum()
            assert saved["directions"][cls] == int(np.searchsorted(share, 0.9 - 1e-12) + 1)
        assert saved["mean_directions"] == pytest.approx(row["extra"]["spectrum/mean_directions"])
        assert f"{run.name} at layer2:" in out and f"mean {saved['mean_directions']:.2f}" in out
    assert mtimes == {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/checkpoints/*.ckpt")}
    # a run killed after its fit, before its test: only tested (issue #22: the finished fit was redone)
    (tmp_path / "runs" / "none-seed1" / "test_metrics.json").unlink()
    resumed, tested = [], []

    def record(config, *, resume=None):
        resumed.append(resume)
        return real_fit(config, resume=resume)

    def record_test(config, *, checkpoint):
        tested.append(Path(checkpoint).name)
        return real_test(config, checkpoint=checkpoint)

    monkeypatch.setattr(compare_module, "fit", record)
    monkeypatch.setattr(compare_module, "test", record_test)
    compare(CONFIG, variants=("none", "manifold"), seeds=(0, 1), overrides=TINY, out_dir=tmp_path,
            command="again", spectrum_point="layer2", log=progress.append)
    assert resumed == [] and tested == ["none-seed1:last"]  # its last checkpoint
    # a run killed mid-fit (no summary yet) continues from its last.ckpt, not from scratch
    for name in ("fit_summary.json", "test_metrics.json"):
        (tmp_path / "runs" / "manifold-seed1" / name).unlink()
    compare(CONFIG, variants=("none", "manifold"), seeds=(0, 1), overrides=TINY, out_dir=tmp_path,
            command="again", spectrum_point="layer2", log=progress.append)
    assert resumed == [tmp_path / "runs" / "manifold-seed1"] and tested == ["none-seed1:last", "manifold-seed1:last"]
