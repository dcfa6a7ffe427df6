"""The comparison's statistics, verdicts, paired differences and report text on synthetic rows, with
numpy as the reference."""

import numpy as np
import pytest

from mmix_applied.reports.comparison import (
    metric_direction,
    metric_order,
    paired_differences,
    render_report,
    summarize,
    verdicts,
)
from tests.helpers.result_rows import ACC, NLL
from tests.helpers.result_rows import rows as _rows


def test_metric_directions_and_order():
    higher = ["test/acc", "test/mean_dice", "test/dice_gm", "test/ood_auroc", "val/acc"]
    lower = ["test/nll", "test/ece_scaled", "test/brier", "test/cer", "test/wer", "test/hd95_wm", "test/loss",
             "test/ood_fpr95", "test/adaptive_ece"]
    assert all(metric_direction(m) == "higher" for m in higher)
    assert all(metric_direction(m) == "lower" for m in lower)
    assert metric_direction("temperature") is None and metric_direction("spectrum/mean_directions") is None
    assert metric_order(["test/nll_scaled", "test/acc", "test/nll", "temperature"]) == [
        "test/acc", "test/nll", "test/nll_scaled", "temperature"]


def test_summary_verdicts_and_paired_differences_against_numpy():
    rows = _rows()
    s = summarize(rows)["classification"]
    assert s["test/nll"]["manifold"]["mean"] == pytest.approx(np.mean(NLL["manifold"]))
    assert s["test/nll"]["manifold"]["std"] == pytest.approx(np.std(NLL["manifold"], ddof=1))
    assert s["temperature"]["none"]["mean"] == pytest.approx(1.3)
    w = verdicts(rows)["classification"]
    assert w["test/nll"]["winner"] == "manifold" and w["test/nll"]["beyond_spread"] is True
    assert w["test/acc"]["winner"] == "manifold" and w["test/acc"]["beyond_spread"] is False
    assert w["test/acc"]["gap"] == pytest.approx(np.mean(ACC["manifold"]) - np.mean(ACC["none"]))
    assert w["test/acc"]["spread"] == pytest.approx(np.std(ACC["none"], ddof=1))
    assert "temperature" not in w  # no direction, no winner
    p = paired_differences(rows)["classification"]
    diffs = np.subtract(NLL["manifold"], NLL["none"])
    assert p["test/nll"]["manifold"]["mean"] == pytest.approx(diffs.mean())
    assert p["test/nll"]["manifold"]["std"] == pytest.approx(diffs.std(ddof=1))
    assert p["test/nll"]["manifold"]["better"] == 3 and p["test/acc"]["manifold"]["better"] == 2
    assert "none" not in p["test/nll"]


def test_report_text():
    report = render_report(_rows(), command="mmix-applied compare -c cfg.yaml --seeds 0,1,2")
    lines = report.splitlines()
    assert lines[3] == "mmix-applied compare -c cfg.yaml --seeds 0,1,2"  # the exact command at the top
    nll = next(line for line in lines if line.startswith("| nll |"))
    assert "| 0.4 ± 0.05 | 0.2967 ± 0.03512 |" in nll and "| manifold | beyond seed spread" in nll
    acc = next(line for line in lines if line.startswith("| acc |"))
    assert "not beyond seed spread" in acc
    order = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and "±" in line][:4]
    assert order == ["acc", "nll", "nll_scaled", "temperature"]  # scaled beside raw
    assert "(3/3 better)" in report
    one_seed = render_report(_rows(seeds=(0,)), command="x")
    assert "one seed: spread unknown" in one_seed
    tie = _rows()
    for r in tie:
        r["metrics"]["test/acc"] = 0.5
    assert "| acc | 0.5 ± 0 | 0.5 ± 0 | tie | tie |" in render_report(tie, command="x")
