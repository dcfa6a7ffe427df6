"""The study driver without training: the goal checks on synthetic rows (numbers chosen on each
side of every threshold), the assembled report, skipped regimes, and the regime list's overrides."""

import json

import pytest
import study
import study_regimes as regimes


def _rows(recipe, values, seeds=(0, 1, 2)):
    """values: {variant: {metric: [per-seed values]}}."""
    return [{"recipe": recipe, "variant": v, "seed": s, "run_dir": f"/r/{v}-{s}", "temperature": None,
             "metrics": {m: xs[i] for m, xs in metrics.items()}, "wall_s": 1.0}
            for v, metrics in values.items() for i, s in enumerate(seeds)]


def _cls(manifold_nll, manifold_acc, input_nll=(0.2, 0.2, 0.2)):
    return _rows("classification", {
        "none": {"test/nll_scaled": [0.20, 0.22, 0.18], "test/acc": [0.90, 0.91, 0.89], "temperature": [1.3] * 3},
        "input": {"test/nll_scaled": list(input_nll), "test/acc": [0.90] * 3, "temperature": [0.8] * 3},
        "manifold": {"test/nll_scaled": list(manifold_nll), "test/acc": list(manifold_acc), "temperature": [0.6] * 3},
    })


def test_classification_goal_from_the_numbers():
    status, detail = regimes.check_classification(_cls([0.17, 0.19, 0.18], [0.90, 0.91, 0.89]))  # 10 % lower
    assert status == "met" and "+10.0% lower" in detail and "T = 1.3 (> 1: overfits)" in detail
    assert regimes.check_classification(_cls([0.18, 0.19, 0.19], [0.90, 0.91, 0.89]))[0] == "not met"  # 7 %
    # 20 % lower NLL but accuracy 0.5 points down: beyond the 0.2-point tolerance
    assert regimes.check_classification(_cls([0.16] * 3, [0.895, 0.905, 0.885]))[0] == "not met"
    # ... and within it
    assert regimes.check_classification(_cls([0.16] * 3, [0.899, 0.909, 0.889]))[0] == "met"
    # behind input mixup
    assert regimes.check_classification(_cls([0.16] * 3, [0.90] * 3, input_nll=[0.15] * 3))[0] == "not met"
    rows = [r for r in _cls([0.16] * 3, [0.9] * 3) if r["variant"] != "input"]
    status, detail = regimes.check_classification(rows)
    assert status == "not measured" and "no input-mixup runs" in detail and "against none: scaled NLL 0.16 vs 0.2" in detail


def test_segmentation_and_handwriting_goals():
    seg = _rows("segmentation", {"none": {"test/mean_dice": [0.80] * 3, "test/nll_scaled": [0.10] * 3},
                                 "manifold": {"test/mean_dice": [0.799] * 3, "test/nll_scaled": [0.09] * 3}})
    assert regimes.check_segmentation(seg)[0] == "met"
    seg[-1]["metrics"]["test/nll_scaled"] = 0.5  # mean scaled NLL now above none's
    assert regimes.check_segmentation(seg)[0] == "not met"
    no_scaled = _rows("segmentation", {"none": {"test/mean_dice": [0.8] * 3}, "manifold": {"test/mean_dice": [0.8] * 3}})
    status, detail = regimes.check_segmentation(no_scaled)
    assert status == "not measured" and "fits a temperature" in detail
    hw = _rows("handwriting", {"none": {"test/cer": [0.04] * 3}, "manifold": {"test/cer": [0.041, 0.04, 0.04]}})
    assert regimes.check_handwriting(hw)[0] == "not met"
    hw[3]["metrics"]["test/cer"] = 0.039
    assert regimes.check_handwriting(hw)[0] == "met"


def test_assemble_sections_goals_and_skips(tmp_path):
    out = tmp_path / "cls20-long"
    out.mkdir()
    rows = _cls([0.17, 0.19, 0.18], [0.90, 0.91, 0.89])
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [{"name": "cls20-long", "skipped": None,
                "cells": [{"cell": None, "skipped": None, "command": "mmix-applied compare -c X", "out": str(out)}]},
               {"name": "seg-digit-canvas", "skipped": "ConfigError: no digit_canvas",
                "cells": [{"cell": None, "skipped": "ConfigError: no digit_canvas", "command": "mmix-applied compare -c S",
                           "out": str(tmp_path / "seg-digit-canvas")}]}]
    text = study.assemble(records, command="python studies/study.py --only cls20-long")
    lines = text.splitlines()
    assert lines[3] == "python studies/study.py --only cls20-long"
    goal = [line for line in lines if line.startswith("| Overfitting") and "| cls20-long |" in line]
    assert len(goal) == 1 and "**met**" in goal[0]
    assert any("| seg-digit-canvas | **not measured** | skipped: ConfigError" in line for line in lines)
    assert any("| hw-digits | **not measured** | regime not selected" in line for line in lines)
    section = text.split("## Classification, 20 labels per class, long run")[1]
    assert "mmix-applied compare -c X" in section.split("\n\n")[2]  # the command heads the section
    assert "### classification" in section and "Paired difference to `none`" in section
    seed1 = next(line for line in lines if line.startswith("| manifold | 1 |"))
    assert seed1.endswith("| 0 | – | -0.03 | – |")  # acc 0.91 - 0.91, no raw nll, nll_scaled 0.19 - 0.22
    assert "Skipped: ConfigError: no digit_canvas" in text


def test_map_cells_and_overrides():
    cells = regimes.grid_cells(next(r for r in regimes.REGIMES if r.grid))
    assert len(cells) == 12 and cells[0] == ("alpha=0.2-points=auto-prob=0.5",
                                             ("mix.alpha=0.2", "mix.points=auto", "mix.prob=0.5"))
    assert any("points=all" in name for name, _ in cells)
    assert regimes._label("[input,layer1,layer2]") == "paper"  # list values get a folder-safe name
    regime = next(r for r in regimes.REGIMES if r.name == "cls20-long")
    ov = study.regime_overrides(regime, profile="gpu", quick=True, accelerator="cpu")
    # later overrides win: the quick sizes after the profile's, the forced accelerator last
    assert ov.index("train.max_epochs=1") > ov.index("train.max_epochs=400")
    assert ov[-2:] == ["train.accelerator=cpu", "train.precision=32"]


def test_unknown_regime_is_an_error_that_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        study.main(["--only", "cls21-long"])
    err = capsys.readouterr().err
    assert "unknown regime 'cls21-long'" in err and "cls20-long" in err


def _with_val(rows, val):
    """val: {variant: [per-seed val/nll_scaled]}."""
    for r in rows:
        r["val"] = {"val/nll_scaled": val[r["variant"]][r["seed"]]}
    return rows


def test_settings_are_chosen_on_validation_not_test(tmp_path):
    """Two alphas pooled under cls100-long: the one with the better validation NLL is chosen even
    where the other has the better test NLL, and the goal is checked on the chosen one."""
    names = {"cls100-long": ("none", "input", "manifold"), "cls100-long-a0.2": ("input", "manifold")}
    base = _with_val(_cls([0.19, 0.19, 0.19], [0.9] * 3), {"none": [0.3] * 3, "input": [0.29] * 3,
                                                             "manifold": [0.25, 0.26, 0.24]})
    # alpha 0.2: the better test NLL (0.15) but the worse validation NLL (0.27): not chosen
    other = _with_val([r for r in _cls([0.15] * 3, [0.9] * 3, input_nll=[0.21] * 3) if r["variant"] != "none"],
                      {"input": [0.28] * 3, "manifold": [0.27] * 3})
    records = []
    for name, rows in (("cls100-long", base), ("cls100-long-a0.2", other)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        records.append({"name": name, "skipped": None, "cells": [{"cell": None, "skipped": None,
                                                                 "command": f"cmd {name}", "out": str(tmp_path / name)}]})
    members = regimes.groups()["cls100-long"]
    pooled = regimes.pool({n: [json.loads(x) for x in (tmp_path / n / "results.jsonl").read_text().splitlines()]
                           for n in names}, [m for m in members if m.name in names])
    assert sorted({r["variant"] for r in pooled}) == ["input a=0.2", "input a=0.5", "manifold a=0.2",
                                                     "manifold a=0.5", "none"]
    choice = regimes.choose(pooled)
    assert choice["manifold"]["variant"] == "manifold a=0.5" and choice["input"]["variant"] == "input a=0.2"
    assert choice["manifold"]["mean"] == pytest.approx(0.25)
    chosen = regimes.chosen_rows(pooled, choice)
    assert {r["variant"] for r in chosen} == {"none", "input", "manifold"}
    # the chosen manifold's test NLL is 0.19 vs none 0.20: 5 % lower, not the 10 % goal (a=0.2 would have met it)
    assert regimes.check_classification(chosen)[0] == "not met"
    text = study.assemble(records, command="study")
    assert "## Settings chosen on validation figures" in text
    assert "**manifold: `manifold a=0.5`** chosen (val/nll_scaled 0.25" in text
    goal = next(line for line in text.splitlines() if line.startswith("| Overfitting") and "| cls100-long |" in line)
    assert "**not met**" in goal and "manifold: `manifold a=0.5`" in goal


def test_a_setting_missing_a_seed_is_not_a_candidate():
    rows = _with_val(_cls([0.1] * 3, [0.9] * 3), {"none": [0.3] * 3, "input": [0.2] * 3, "manifold": [0.1] * 3})
    rows = [r for r in rows if not (r["variant"] == "manifold" and r["seed"] == 2)]
    assert "manifold" not in regimes.choose(rows) and regimes.choose(rows)["input"]["variant"] == "input"


def test_publish_then_report_only_rebuilds_the_report_from_the_copied_rows(tmp_path):
    """The rows a study publishes are enough for --report-only to rebuild the same sections elsewhere."""
    runs = tmp_path / "runs" / "cls20-long"
    runs.mkdir(parents=True)
    rows = _cls([0.17, 0.19, 0.18], [0.90, 0.91, 0.89])
    (runs / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (runs / "classification_reliability.png").write_bytes(b"\x89PNG fake")
    (runs / "runs").mkdir()  # the run folders (checkpoints) are not copied
    record = {"name": "cls20-long", "skipped": None,
              "cells": [{"cell": None, "skipped": None, "command": "cmd", "out": str(runs)}]}
    dest = tmp_path / "docs" / "results"
    written = study.publish([record], dest)
    assert sorted(p.name for p in written) == ["classification_reliability.png", "results.jsonl"]
    assert (dest / "cls20-long" / "results.jsonl").read_text() == (runs / "results.jsonl").read_text()
    assert not (dest / "cls20-long" / "runs").exists()
    report = study.main(["--report-only", "--only", "cls20-long,cls100-long", "--out", str(dest)])
    text = report.read_text()
    goal = next(line for line in text.splitlines() if line.startswith("| Overfitting") and "| cls20-long |" in line)
    assert "**met**" in goal
    assert "| cls100-long | **not measured** | skipped: not run (no results under --out)" in text
    assert study.publish([record], dest)  # publishing again overwrites in place


def test_variants_filter_runs_only_those_and_rejects_unknown_ones(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(study, "compare", lambda config, **kw: calls.append(kw["variants"]))
    hw = next(r for r in regimes.REGIMES if r.name == "hw-digits")
    over = study.regime_overrides(hw, profile="cpu", quick=True, accelerator="cpu")
    study.run_regime(hw, out=tmp_path, seeds=[0], overrides=over, deadline=None, quick=True, only_variants=["none"])
    rnn = next(r for r in regimes.REGIMES if r.name == "hw-digits-rnn")
    record = study.run_regime(rnn, out=tmp_path, seeds=[0], deadline=None, only_variants=["none"],
                              overrides=study.regime_overrides(rnn, profile="cpu", quick=False, accelerator=None))
    assert calls == [("none",)]
    assert "none of its variants (manifold) is in --variants none" in record["skipped"]
    with pytest.raises(SystemExit):
        study.main(["--variants", "nonne"])
    assert "--variants: unknown variant(s) ['nonne']" in capsys.readouterr().err


def test_mixing_from_the_first_step_says_so_whatever_the_config_default():
    """hw-digits is the 'no warm-up' arm: it must set warmup 0 itself (the recipe's default is now 1)."""
    by = {r.name: r for r in regimes.REGIMES}
    assert "mix.warmup_epochs=0" in by["hw-digits"].overrides
    assert all("mix.warmup_epochs=1" in by[n].overrides for n in ("hw-digits-warmup", "hw-digits-conv", "hw-digits-rnn"))


def test_cells_filter_splits_a_map_between_processes(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(study, "compare", lambda config, **kw: calls.append(kw["out_dir"].name))
    grid = next(r for r in regimes.REGIMES if r.grid)
    first, second = (name for name, _ in regimes.grid_cells(grid)[:2])
    record = study.run_regime(grid, out=tmp_path, seeds=[0], deadline=None, only_cells=[second],
                              overrides=study.regime_overrides(grid, profile="cpu", quick=False, accelerator=None))
    assert calls == [second]
    assert next(c for c in record["cells"] if c["cell"] == first)["skipped"] == "not in --cells"
    with pytest.raises(SystemExit):
        study.main(["--only", grid.name, "--cells", "alpha=9", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--cells: unknown cell(s) ['alpha=9']" in err and first in err


def test_map_cells_are_candidates_of_their_baselines_group(tmp_path):
    """A cls20-long-map cell with the best validation NLL is chosen over cls20-long's own manifold,
    and the goal is checked on that cell's test figures."""
    grid = next(r for r in regimes.REGIMES if r.grid)
    base = _with_val(_cls([0.19] * 3, [0.9] * 3), {"none": [0.3] * 3, "input": [0.29] * 3, "manifold": [0.28] * 3})
    (tmp_path / "cls20-long").mkdir()
    (tmp_path / "cls20-long" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in base))
    good, bad = (name for name, _ in regimes.grid_cells(grid)[:2])
    cells = []
    for cell, val, nll in ((good, 0.2, 0.15), (bad, 0.4, 0.10)):  # bad: the best test NLL, the worst validation
        rows = _with_val([r for r in _cls([nll] * 3, [0.9] * 3) if r["variant"] == "manifold"], {"manifold": [val] * 3})
        (tmp_path / grid.name / cell).mkdir(parents=True)
        (tmp_path / grid.name / cell / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        cells.append({"cell": cell, "skipped": None, "command": f"cmd {cell}", "out": str(tmp_path / grid.name / cell)})
    records = [{"name": "cls20-long", "skipped": None, "cells": [{"cell": None, "skipped": None, "command": "cmd",
                                                                "out": str(tmp_path / "cls20-long")}]},
               {"name": grid.name, "skipped": None, "cells": cells}]
    text = study.assemble(records, command="study")
    assert f"**manifold: `manifold {good}`** chosen (val/nll_scaled 0.2" in text
    goal = next(line for line in text.splitlines() if line.startswith("| Overfitting") and "| cls20-long |" in line)
    # the chosen cell's test NLL 0.15 vs none 0.20: 25 % lower, ahead of input (0.2): met
    assert "**met**" in goal and f"manifold: `manifold {good}`" in goal and "scaled NLL 0.15 vs none 0.2" in goal
