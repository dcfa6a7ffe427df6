"""The comparison's figures drawn from result rows and reliability bins: each is a PNG, and a run
without logged curves draws none."""

from pathlib import Path

import torch

from mmix_applied.metrics import ExpectedCalibrationError
from mmix_applied.reports.figures import plot_metric_bars, plot_reliability, plot_validation_curves
from tests.helpers.result_rows import rows as result_rows


def test_plots_from_rows(tmp_path):
    rows = result_rows()
    for r in rows:
        r["metrics"]["test/dice_gm"], r["metrics"]["test/dice_wm"] = 0.8, 0.7
        run = tmp_path / Path(r["run_dir"]).name
        (run / "logs").mkdir(parents=True)
        (run / "logs" / "metrics.csv").write_text("epoch,step,train/loss,val/loss,val/acc\n0,1,2.0,,\n0,1,,1.5,0.5\n"
                                                  "1,3,,1.2,0.6\n")
        r["run_dir"] = str(run)
    curves = plot_validation_curves(rows, tmp_path / "curves.png")
    bars = plot_metric_bars(rows, ["test/dice_gm", "test/dice_wm"], tmp_path / "bars.png", title="Dice")
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(50, 3, generator=g), 1)
    metric = ExpectedCalibrationError(n_bins=15, from_logits=False)
    metric.update(probs, torch.randint(0, 3, (50,), generator=g))
    rel = plot_reliability({"none": {"raw": metric.bins()}}, tmp_path / "rel.png")
    for path in (curves, bars, rel):
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert plot_validation_curves([{**rows[0], "run_dir": str(tmp_path / "missing")}], tmp_path / "x.png") is None
