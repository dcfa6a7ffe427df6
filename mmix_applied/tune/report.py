"""The ``tune`` report: the trials, Optuna's history and importance plots, and the final comparison's verdict.

Settings are chosen on validation figures (the trials table); the final comparison's test figures
on fresh seeds are only reported, with verdicts computed by :mod:`mmix_applied.reports.comparison`
(paired per-seed differences, the seed spread).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmix_applied.reports.comparison import paired_differences, short_name, summarize, verdict_line
from mmix_applied.reports.figures import new_figure, save_figure
from mmix_applied.tune.backend import TrialState, optuna
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["final_summary", "trial_rows", "write_report"]


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def trial_rows(study: Any, seeds: Sequence[int], baseline: Mapping[int, float]) -> list[dict[str, Any]]:
    """One row per trial (surplus ones left out): number, state, value, per-seed figures, paired Δ to none."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        per_seed = {s: t.user_attrs.get(f"seed{s}") for s in seeds}
        diffs = [per_seed[s] - baseline[s] for s in seeds if per_seed[s] is not None and s in baseline]
        note = []
        if "retry_of" in t.user_attrs:
            note.append(f"retry of {t.user_attrs['retry_of']}")
        if t.state == TrialState.PRUNED:
            step = t.last_step
            note.append("diverged" if "diverged" in t.user_attrs else f"pruned at step {step}")
        if "error" in t.user_attrs:
            note.append(t.user_attrs["error"].splitlines()[0][:120])
        elif t.state == TrialState.FAIL:
            note.append("its process ended (retried)")
        wall = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start \
            else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value, "seeds": per_seed,
                     "delta": sum(diffs) / len(diffs) if len(diffs) == len(seeds) else None, "params": t.params,
                     "wall_s": wall, "note": "; ".join(note)})
    return rows


def _plots(study: Any, out: Path, *, figure: str, baseline: float | None) -> list[str]:
    """Optuna's optimisation history (with the unmixed baseline) and parameter importances, where the trials allow."""
    new_figure()  # selects the Agg backend before Optuna imports pyplot
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    drawn, notes = [], []
    for name, draw in (("tune_history.png", ovm.plot_optimization_history),
                       ("tune_importance.png", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw(study)
        except (ValueError, RuntimeError) as err:  # e.g. importance needs two complete trials
            notes.append(f"{name}: not drawn ({err})")
            continue
        if name == "tune_history.png":
            axes.set_ylabel(f"validation {figure}")
            if baseline is not None:
                axes.axhline(baseline, color="tab:gray", linestyle="--", label="none (unmixed)")
                axes.legend(loc="best")
        fig = axes.figure
        fig.set_size_inches(7, 4)
        save_figure(fig, out / name)
        plt.close(fig)
        drawn.append(name)
    return drawn + notes


def final_summary(rows: Sequence[Mapping[str, Any]], *, metric: str) -> list[str]:
    """Lines on the final comparison: means, the relative change to ``none``, and the computed verdicts."""
    if not rows:
        return ["No final comparison ran."]
    recipe = rows[0]["recipe"]
    stats = summarize(rows).get(recipe, {})
    lines = []
    cells = stats.get(metric, {})
    if "manifold" in cells and "none" in cells:
        m, n = cells["manifold"]["mean"], cells["none"]["mean"]
        seeds = sorted({int(r["seed"]) for r in rows})
        lines.append(f"- Test {short_name(metric)} (mean ± std over seeds {', '.join(map(str, seeds))}): "
                     + ", ".join(f"{v} {_fmt(c['mean'])} ± {_fmt(c['std'])}" for v, c in cells.items())
                     + f"; the tuned setting (manifold) against none: {100 * (m - n) / n:+.1f} %.")
    if recipe == "classification" and "test/acc" in stats:
        acc = stats["test/acc"]
        diff = paired_differences(rows).get(recipe, {}).get("test/acc", {}).get("manifold")
        if diff:
            lines.append("- Test accuracy: " + ", ".join(f"{v} {_fmt(c['mean'])}" for v, c in acc.items())
                         + f"; paired manifold − none {diff['mean']:+.4f} ± {_fmt(diff['std'])}.")
    for baseline in ("none", "input"):
        try:
            lines.append("- Verdict: " + verdict_line(rows, metric=metric, variant="manifold", baseline=baseline))
        except KeyError:
            continue
    return lines


def _table(rows: Sequence[Mapping[str, Any]], seeds: Sequence[int], keys: Sequence[str], figure: str) -> list[str]:
    head = ["trial", "state", f"{figure} (mean)", *[f"seed {s}" for s in seeds], "Δ vs none", *keys, "wall", "note"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [str(r["number"]), r["state"], _fmt(r["value"]), *[_fmt(r["seeds"][s]) for s in seeds],
                 "–" if r["delta"] is None else f"{r['delta']:+.4g}", *[_fmt(r["params"].get(k)) for k in keys],
                 "–" if r["wall_s"] is None else f"{r['wall_s']:.0f} s", r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, study: Any, *, command: str, objective: Any, seeds: Sequence[int],
                 baseline: Mapping[int, float], space: Any, storage_url: str, final_dir: Path | None,
                 final_rows: Sequence[Mapping[str, Any]], final_overrides: Sequence[str]) -> Path:
    """Write ``out/report.md`` (and the plots beside it); returns its path."""
    rows = trial_rows(study, seeds, baseline)
    keys = list(space.params)
    counts = {s.name.lower(): sum(1 for r in rows if r["state"] == s.name.lower())
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    base_mean = sum(baseline.values()) / len(baseline) if baseline else None
    lines = ["# Tuning report", "", "```", command, "```", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Study `{study.study_name}` in "
             f"`{storage_url}`; Optuna {optuna.__version__}. Each trial trains one setting on seeds "
             f"{', '.join(map(str, seeds))} and is judged on the mean **validation** {objective.figure} "
             f"({objective.direction}). Trials: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + ".", "",
             "Search space: " + "; ".join(space.describe()) + ".", "",
             f"Unmixed baseline (`none`, same seeds): {objective.figure} "
             + ", ".join(f"seed {s} {_fmt(v)}" for s, v in sorted(baseline.items()))
             + (f"; mean {_fmt(base_mean)}." if base_mean is not None else "."), "",
             "## Trials", "", *_table(rows, seeds, keys, objective.figure), ""]
    complete = [r for r in rows if r["state"] == "complete"]
    if complete:
        best = study.best_trial
        lines += [f"**Best on validation:** trial {best.number}, {objective.figure} {best.value:.4g}"
                  + (f" (none: {base_mean:.4g})" if base_mean is not None else "") + ". As overrides:", "",
                  "```", " ".join(final_overrides), "```", ""]
    lines += [f"![{Path(name).stem}]({name})" if name.endswith(".png") else f"- {name}"
              for name in _plots(study, out, figure=objective.figure, baseline=base_mean)]
    lines += ["", "## Final comparison on fresh seeds (test figures, reported only)", ""]
    if final_dir is not None:
        lines += [f"The best setting against `none` and input mixup (the same knobs, mixing at the input only): "
                  f"[{final_dir.name}/report.md]({final_dir.name}/report.md).", ""]
    lines += final_summary(final_rows, metric=objective.test)
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
