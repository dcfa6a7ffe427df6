"""The `make demo` job, shortened: both variants train, test and predict; the run directory is complete."""

import json

import pytest

pytest.importorskip("nilearn")

from mmix_applied.tasks import demo  # noqa: E402


def test_demo_end_to_end_short(tmp_path, capsys):
    assert demo.main(["--task", "segmentation", "--out", str(tmp_path), "--epochs", "1", "--max-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "ONE template brain" in out and "| none |" in out and "| manifold |" in out
    (run,) = tmp_path.glob("demo-segmentation-*")
    results = json.loads((run / "results.json").read_text())
    assert set(results) == {"none", "manifold"}
    assert all(0.0 <= r["test/mean_dice"] <= 1.0 and r["test/nll"] > 0 for r in results.values())
    assert (run / "predictions.png").stat().st_size > 10_000
    assert "not a benchmark" in (run / "results.md").read_text()
    for variant in ("none", "manifold"):
        assert (run / variant / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run / variant / "predictions").glob("z*.png"))) == 8


def test_demo_configs_and_table(tmp_path):
    for variant in ("none", "input", "manifold"):
        cfg = demo.demo_config(variant, run_dir=tmp_path, epochs=3)
        assert cfg.recipe == "segmentation" and cfg.mix.variant == variant and cfg.data.source == "brain"
        assert cfg.run.name == variant and cfg.train.max_epochs == 3
    table = demo._table({"none": {"test/mean_dice": 0.81234, "test/nll": 0.2, "test/ece": 0.01, "seconds": 12.0}})
    assert "| none | 0.812 | nan | nan | nan | 0.200 | 0.010 | 12 |" in table


def test_demo_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        demo.main(["--task", "segmentation", "--variants", "cutmix"])
