"""A few training steps of the handwriting recipe through the engine: fit, test, predict."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from mmix_applied.config import load_config
from mmix_applied.data.digit_strings import DigitStrings
from mmix_applied.data.text_lines import read_tsv
from mmix_applied.engine import runner
from tests.helpers import ROOT

CONFIGS = ROOT / "configs"


def test_fit_test_predict_on_the_embedded_digits(tmp_path):
    cfg = load_config(CONFIGS / "handwriting.yaml", [
        f"run.dir={tmp_path}", "run.name=hw", "model.options={hidden_size: 8, cnn_widths: [4, 8, 8, 8]}",
        "data.batch_size=4", "data.digits.train_lines=12", "data.digits.val_lines=4", "data.digits.test_lines=6",
        "data.digits.max_digits=4", "train.max_epochs=1", "train.loggers=[csv]", "train.enable_progress_bar=false",
        "mix.prob=1.0", "mix.warmup_epochs=0",  # one epoch: the config's warm-up would leave nothing mixed
    ])
    run = runner.fit(cfg)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    with open(run / "logs" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert any(r.get("train/mixed") == "1.0" for r in rows)  # the steps were mixed
    assert any(r.get("val/cer") not in (None, "") for r in rows)

    metrics = runner.test(cfg, checkpoint=run)
    assert set(metrics) >= {"test/cer", "test/wer", "test/loss"}
    # CTC has no temperature, and the run says so
    assert "temperature" not in metrics and not (run / "temperature.json").exists()
    assert "no temperature" in json.loads((run / "fit_summary.json").read_text())["calibration_note"]

    written = runner.predict(cfg, checkpoint=run)
    assert written == run / "predictions.csv"  # CSV: quoted, so any file name survives
    rows = read_tsv(written, require_text=False)
    assert [str(r.image_path.name) for r in rows] == [f"digits:test:{i}" for i in range(6)]
    assert all(set(r.text) <= set("0123456789") for r in rows)
    # The reported CER is the predictions' edit distance to the true lines, computed independently
    # (test and predict decode the same test lines with the same greedy decoder).
    truth = DigitStrings("test", num_lines=6, max_digits=4, seed=0, glyph_seed=0)
    refs = [truth.line(i)[1] for i in range(6)]
    errors = sum(_edit_distance(r.text, ref) for r, ref in zip(rows, refs))
    assert metrics["test/cer"] == pytest.approx(errors / sum(len(ref) for ref in refs), abs=1e-6)

    folder = tmp_path / "scans"
    folder.mkdir()
    for name, width in (("b.png", 60), ("a.png", 90)):
        cv2.imwrite(str(folder / name), np.full((40, width), 255, np.uint8))
    out = runner.predict(cfg, checkpoint=run, input=str(folder), output=tmp_path / "scans.tsv")
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# mmix-applied predictions")  # a .tsv name: TSV, its first line a comment
    assert [line.split("\t")[0] for line in lines[1:]] == [str(folder / "a.png"), str(folder / "b.png")]
    assert [r.image_path for r in read_tsv(out, require_text=False)] == [folder / "a.png", folder / "b.png"]


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance by the textbook dynamic programme."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]
