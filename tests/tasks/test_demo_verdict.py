"""The demo's one-line verdict follows from the numbers, both ways, on synthetic rows."""

import numpy as np
import pytest

from mmix_applied.reports.comparison import verdict_line


def _rows(none, manifold, metric="test/nll_scaled"):
    rows = []
    for seed, (a, b) in enumerate(zip(none, manifold)):
        rows.append({"recipe": "classification", "variant": "none", "seed": seed, "metrics": {metric: a}})
        rows.append({"recipe": "classification", "variant": "manifold", "seed": seed, "metrics": {metric: b}})
    return rows


def test_a_consistent_win_is_beyond_the_spread():
    none, mixed = [0.30, 0.20, 0.25], [0.25, 0.16, 0.20]
    diffs = np.subtract(mixed, none)
    line = verdict_line(_rows(none, mixed), label="scaled test NLL")
    assert line.startswith(f"manifold mixup lowered scaled test NLL by {abs(diffs.mean()):.3f} ± "
                           f"{diffs.std(ddof=1):.3f} (paired, 3 seeds, better on 3 of 3 seeds)")
    assert "beyond the seed spread (mixing won)" in line


def test_a_loss_says_so_and_a_noisy_gap_is_within_the_spread():
    line = verdict_line(_rows([0.20, 0.20, 0.20], [0.25, 0.26, 0.25]))
    assert "raised test/nll_scaled by 0.053" in line and "(mixing lost)" in line and "beyond the seed spread" in line
    noisy = verdict_line(_rows([0.20, 0.20, 0.20], [0.10, 0.30, 0.17]))
    assert "lowered" in noisy and "within the seed spread (mixing won)" in noisy and "better on 2 of 3" in noisy


def test_two_seeds_are_too_few_for_a_spread_verdict():
    # a consistent two-seed gap (0.05 and 0.06, std 0.007) used to read "beyond the seed spread"
    line = verdict_line(_rows([0.20, 0.20], [0.25, 0.26]))
    assert "raised test/nll_scaled by 0.055" in line and "(mixing lost)" in line
    assert "2 seeds: too few to judge it against the seed spread (need 3 or more)" in line and "beyond" not in line


def test_higher_is_better_metrics_and_one_seed():
    line = verdict_line(_rows([0.90], [0.92], metric="test/acc"), metric="test/acc")
    assert "raised test/acc by 0.020" in line and "one seed: no seed spread" in line and "(mixing won)" in line


def test_missing_metric_names_what_the_rows_have():
    with pytest.raises(KeyError, match="received rows with metrics \\['test/nll'\\]"):
        verdict_line(_rows([0.2], [0.1], metric="test/nll"))
