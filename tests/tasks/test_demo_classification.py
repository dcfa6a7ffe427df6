"""The `make demo` comparison, shortened: two paired seeds, the table, a verdict that follows from the numbers."""

import json
from pathlib import Path

import numpy as np
import pytest

from mmix_applied.tasks import demo
from mmix_applied.tasks.demo_compare import table


def test_demo_compare_end_to_end_short(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--epochs", "1", "--max-steps", "2", "--seeds", "0,1", "--labels-per-class", "8",
            "--model", "test_resnet"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    (run,) = tmp_path.glob("demo-classification-*")
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("manifold", 0), ("manifold", 1), ("none", 0),
                                                                ("none", 1)]
    assert "| variant | seeds | acc | NLL | NLL scaled | ECE | ECE scaled | T |" in out
    acc = [r["metrics"]["test/acc"] for r in rows if r["variant"] == "none"]
    assert f"| none | 2 | {np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f} |" in out
    # the verdict's number is the paired per-seed difference, recomputed here from the rows
    key = "test/nll_scaled" if all("test/nll_scaled" in r["metrics"] for r in rows) else "test/nll"
    by = {(r["variant"], r["seed"]): r["metrics"][key] for r in rows}
    diffs = np.array([by[("manifold", s)] - by[("none", s)] for s in (0, 1)])
    (line,) = [ln for ln in out.splitlines() if ln.startswith("manifold mixup ") and "NLL" in ln]
    (acc_line,) = [ln for ln in out.splitlines() if ln.startswith("manifold mixup ") and "test accuracy" in ln]
    acc_diffs = np.array([r["metrics"]["test/acc"] for r in sorted(rows, key=lambda r: r["seed"])
                          if r["variant"] == "manifold"]) - np.array(
        [r["metrics"]["test/acc"] for r in sorted(rows, key=lambda r: r["seed"]) if r["variant"] == "none"])
    assert ("raised" in acc_line) == (acc_diffs.mean() > 0) and ("(mixing won)" in acc_line) == (acc_diffs.mean() > 0)
    assert f"by {abs(diffs.mean()):.3f} ± {diffs.std(ddof=1):.3f} (paired, 2 seeds" in line
    assert ("lowered" in line) == (diffs.mean() < 0) and ("(mixing lost)" in line) == (diffs.mean() > 0)
    assert "2 seeds: too few to judge it against the seed spread" in line  # a spread verdict needs 3 seeds
    assert (run / "classification_reliability.png").stat().st_size > 5_000
    assert line in (run / "demo.md").read_text()
    # the runs use the shipped demo config's mixing setting (the one the study chose), not the recipe's defaults
    import yaml

    from tests.helpers import ROOT
    shipped = yaml.safe_load((ROOT / "configs" / "demo_classification.yaml").read_text())["mix"]
    mixed = next(r for r in rows if r["variant"] == "manifold")
    mix = yaml.safe_load((Path(mixed["run_dir"]) / "config.yaml").read_text())["mix"]
    assert (mix["alpha"], mix["clean_weight"]) == (shipped["alpha"], shipped["clean_weight"]) == (0.2, 1.0)
    assert "mixing at alpha 0.2 with the RegMixup clean term (weight 1.0), seeds [0, 1] (paired)" in out


def test_table_marks_missing_columns():
    rows = [{"variant": "none", "seed": 0, "metrics": {"test/acc": 0.9, "test/nll": 0.3}, "temperature": None}]
    assert "| none | 1 | 0.900 | 0.300 | – | – | – | – |" in table(rows)


def test_demo_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--variants", "manifold"])  # no paired baseline
    with pytest.raises(SystemExit):
        demo.main(["--seeds", "a"])
    with pytest.raises(SystemExit):
        demo.main(["-c", "segmentation"])  # a shipped config, but not a classification one
    assert "received 'segmentation', a segmentation config" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="Did you mean 'demo_classification'"):
        demo.main(["-c", "demo_clasification"])


def test_the_demo_defaults_come_from_its_shipped_config():
    """The installed code holds no study setting: the demo's defaults are the YAML's (read by name)."""
    from mmix_applied.config import load_config
    from mmix_applied.tasks import demo_compare

    cfg = load_config(demo_compare.CONFIG)
    assert (cfg.model.name, cfg.data.labels_per_class, cfg.train.max_epochs, cfg.train.check_val_every_n_epoch,
            cfg.mix.alpha, cfg.mix.clean_weight) == ("resnet18", 50, 40, 5, 0.2, 1.0)
    assert not any(name.isupper() and name not in ("CONFIG", "COLUMNS") for name in vars(demo_compare))
