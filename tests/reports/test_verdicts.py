"""Verdicts need three seeds; a temperature that fell back to 1 or sits at its bound is flagged in the report."""

import numpy as np
import pytest

from mmix_applied.reports.comparison import MIN_SEEDS, render_report, temperature_flag, verdict_line, verdicts


def _rows(nll, temperatures=None, notes=None):
    rows = []
    for variant, values in nll.items():
        for seed, value in enumerate(values):
            t = (temperatures or {}).get((variant, seed), 0.7)
            metrics = {"test/nll": value, "temperature": t}
            if notes and (variant, seed) in notes:
                metrics["temperature_note"] = notes[(variant, seed)]
            rows.append({"recipe": "classification", "variant": variant, "seed": seed, "run_dir": f"/r/{variant}-{seed}",
                         "metrics": metrics, "temperature": t, "wall_s": 1.0})
    return rows


def test_two_seeds_never_give_a_beyond_spread_verdict():
    # a gap of 0.1 against stds of 0.0071: beyond by the old rule (gap > larger std), with 2 seeds each
    two = _rows({"none": [0.40, 0.41], "manifold": [0.30, 0.31]})
    gap, spread = 0.1, np.std([0.40, 0.41], ddof=1)
    assert gap > spread
    w = verdicts(two)["classification"]["test/nll"]
    assert w["winner"] == "manifold" and w["beyond_spread"] is None and w["seeds"] == 2
    text = render_report(two, command="x")
    line = next(ln for ln in text.splitlines() if ln.startswith("| nll |"))
    assert f"2 seeds: too few to judge the spread (need {MIN_SEEDS})" in line and "beyond" not in line
    three = _rows({"none": [0.40, 0.41, 0.40], "manifold": [0.30, 0.31, 0.30]})
    assert verdicts(three)["classification"]["test/nll"]["beyond_spread"] is True
    assert "beyond seed spread (gap 0.1 >" in render_report(three, command="x")
    uneven = _rows({"none": [0.40, 0.41, 0.40], "manifold": [0.30, 0.31]})  # the smaller side counts
    assert verdicts(uneven)["classification"]["test/nll"]["beyond_spread"] is None
    assert "2 seeds: too few to judge it against the seed spread" in verdict_line(two, metric="test/nll")
    assert "beyond the seed spread" in verdict_line(three, metric="test/nll")


def test_a_temperature_fallback_or_bound_is_flagged_in_the_report():
    note = "fell back to T = 1: all-correct validation data (NLL falls as T -> 0); T at its bound 0.05"
    rows = _rows({"none": [0.4, 0.4, 0.4], "manifold": [0.3, 0.3, 0.3]},
                 temperatures={("manifold", 0): 1.0, ("none", 2): 0.05},
                 notes={("manifold", 0): note})
    assert temperature_flag(rows[3]) == note  # manifold seed 0: the engine's note
    assert "at its bound" in temperature_flag(rows[2])  # none seed 2: an old run with T = 0.05 kept
    assert temperature_flag(rows[1]) is None
    text = render_report(rows, command="x")
    t_row = next(ln for ln in text.splitlines() if ln.startswith("| temperature |"))
    assert "⚠ fallback or at a bound: none seed 2, manifold seed 0" in t_row
    runs = [ln for ln in text.splitlines() if ln.startswith("| classification | manifold | 0 |")]
    assert runs and f"⚠ {note}" in runs[0]
    assert "in-distribution images as the positive class" in text and "conf_gap" in text


@pytest.mark.parametrize("t, flagged", [(0.05, True), (20.0, True), (0.0501, False), (1.0, False), (19.9, False)])
def test_bound_detection(t, flagged):
    assert (temperature_flag({"temperature": t, "metrics": {}}) is not None) is flagged
