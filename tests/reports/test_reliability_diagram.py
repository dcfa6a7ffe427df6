"""Reliability figures: gap bars drawn from the lower of accuracy and confidence, over/under said; compare's
curves pool the seeds, use equal-mass bins where data are scarce and tell the seeds apart."""

import csv

import numpy as np
import pytest
import torch

import mmix_applied.compare as compare_module
from mmix_applied.compare import pooled_reliability
from mmix_applied.metrics import calibration_curve
from mmix_applied.reports.figures import reliability_figure


def _bars(ax, label):
    containers = [c for c in ax.containers if c.get_label() == label]
    return [bar for c in containers for bar in c.patches]


def test_gap_bars_start_at_the_lower_of_accuracy_and_confidence_with_positive_heights():
    # bin 0.4-0.6: confidence 0.5, accuracy 0.8 (underconfident); bin 0.8-1.0: confidence 0.9, accuracy 0.6 (over)
    bins = {"count": np.array([0, 0, 10, 0, 10.0]), "confidence": np.array([np.nan, np.nan, 0.5, np.nan, 0.9]),
            "accuracy": np.array([np.nan, np.nan, 0.8, np.nan, 0.6]), "edges": np.linspace(0, 1, 6)}
    fig = reliability_figure(bins, title="t")
    ax = fig.axes[0]
    (under,) = _bars(ax, "gap: underconfident (accuracy > confidence)")
    (over,) = _bars(ax, "gap: overconfident (confidence > accuracy)")
    assert (under.get_y(), under.get_height()) == pytest.approx((0.5, 0.3))  # from conf 0.5 up to acc 0.8
    assert (over.get_y(), over.get_height()) == pytest.approx((0.6, 0.3))  # from acc 0.6 up to conf 0.9
    assert all(p.get_height() >= 0 for p in ax.patches)  # no negative bar painted over the accuracy
    assert under.get_facecolor() != over.get_facecolor()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "gap: underconfident (accuracy > confidence)" in legend and "accuracy" in legend
    assert "ECE 0.3000" in ax.get_title() and "calibrated" in ax.get_title() and "+0.0000" in ax.get_title()


def test_title_says_the_direction():
    edges = np.linspace(0, 1, 3)
    under = {"count": np.array([0, 5.0]), "confidence": np.array([np.nan, 0.6]), "accuracy": np.array([np.nan, 0.9]),
             "edges": edges}
    assert "underconfident (conf − acc -0.3000)" in reliability_figure(under).axes[0].get_title()
    over = {**under, "accuracy": np.array([np.nan, 0.2])}
    assert "overconfident (conf − acc +0.4000)" in reliability_figure(over).axes[0].get_title()


def _seed_runs(n=40, seeds=(0, 1, 2), temperature=0.5):
    g = torch.Generator().manual_seed(4)
    runs, logits = [], {}
    for seed in seeds:
        z = torch.randn(n, 5, generator=g, dtype=torch.float64) * 2
        y = torch.randint(0, 5, (n,), generator=g)
        logits[seed] = (z, y)
        runs.append((seed, torch.softmax(z, 1), y, temperature))
    return runs, logits


def test_pooled_bins_pool_every_seed_each_scaled_by_its_own_temperature():
    runs, logits = _seed_runs()
    runs[1] = (1, runs[1][1], runs[1][2], 2.0)  # another T on seed 1
    curves = pooled_reliability(runs)
    z = torch.cat([logits[s][0] / t for s, t in ((0, 0.5), (1, 2.0), (2, 0.5))])
    y = torch.cat([logits[s][1] for s in (0, 1, 2)])
    ref = calibration_curve(z, y, n_bins=4, equal_mass=True)  # 120 predictions < 15 x 25: 120 // 25 = 4 bins
    got = curves["scaled"]["pooled"]
    assert got["count"].tolist() == [30, 30, 30, 30]
    assert torch.allclose(got["confidence"], ref["confidence"], atol=1e-6)
    assert torch.allclose(got["accuracy"], ref["accuracy"])
    assert sorted(curves["raw"]["per_seed"]) == [0, 1, 2]
    assert curves["raw"]["per_seed"][0]["count"].tolist() == [20, 20]  # 40 predictions: two equal-mass bins
    many, _ = _seed_runs(n=600, seeds=(0, 1, 2))  # 1800 >= 15 x 25: equal-width bins
    assert torch.equal(pooled_reliability(many)["raw"]["pooled"]["edges"], torch.linspace(0, 1, 16, dtype=torch.float64))
    assert "scaled" not in pooled_reliability([(0, runs[0][1], runs[0][2], None)])


def _write_predictions(path, probs, target):
    names = [f"c{i}" for i in range(probs.shape[1])]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "target", "predicted", "confidence", *[f"p_{n}" for n in names], "temperature"])
        for i, (p, t) in enumerate(zip(probs.tolist(), target.tolist())):
            w.writerow([f"x{i}", names[t], names[int(np.argmax(p))], f"{max(p):.6f}", *[f"{v:.6f}" for v in p], "1"])


def test_compare_plots_every_seed_pooled_and_marks_a_bound_temperature(tmp_path, monkeypatch):
    runs, _ = _seed_runs()
    rows = []
    for variant in ("none", "manifold"):
        for seed, probs, target, _ in runs:
            run = tmp_path / f"{variant}-seed{seed}"
            run.mkdir()
            _write_predictions(run / "predictions.csv", probs, target)
            t = 0.05 if (variant, seed) == ("manifold", 2) else 0.8  # one temperature stuck at its bound
            rows.append({"recipe": "classification", "variant": variant, "seed": seed, "run_dir": str(run),
                         "metrics": {"test/acc": 0.5, "temperature": t}, "temperature": t})
    drawn = {}

    def capture(curves, path, *, title, notes):
        drawn.update(curves=curves, title=title, notes=notes)
        return path

    monkeypatch.setattr(compare_module, "plot_pooled_reliability", capture)
    names = compare_module._plots(rows, tmp_path)
    assert "classification_reliability.png" in names["classification"]
    assert set(drawn["curves"]) == {"none", "manifold"}
    assert sorted(drawn["curves"]["manifold"]["raw"]["per_seed"]) == [0, 1, 2]  # not seed 0 alone
    assert drawn["curves"]["manifold"]["raw"]["pooled"]["count"].sum() == 120
    assert "seeds 0, 1, 2 pooled" in drawn["title"] and "manifold seed 2" in drawn["notes"]["scaled"]
    monkeypatch.undo()
    path = compare_module.plot_pooled_reliability(drawn["curves"], tmp_path / "rel.png", title="t",
                                                  notes=drawn["notes"])
    assert path.read_bytes()[:4] == b"\x89PNG"
