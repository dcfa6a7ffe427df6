"""The comparison report: seed statistics, verdicts and paired differences, from result rows.

Its plots are drawn by :mod:`mmix_applied.reports.figures`.

Pure functions of the rows :func:`mmix_applied.compare.compare` writes to ``results.jsonl`` (one
per run: ``recipe``, ``variant``, ``seed``, ``run_dir``, ``metrics`` (test), ``val``
(the validation figures settings are chosen on), ``temperature``, ``wall_s``), so they can be
tested and rerun without training. No Lightning import.

Statistics: the mean and the sample standard deviation (``ddof=1``) over seeds. A winner's lead
is **beyond the seed spread** when the gap between the best and the second-best mean exceeds the
larger of their two standard deviations, judged only with at least :data:`MIN_SEEDS` (3) seeds
each: the std of two seeds is one difference, too rough to call anything beyond it. Manifold Mixup's
claims (Verma et al., ICML 2019) are about differences of a few percent, of the order of the
seed-to-seed spread on small data, so the report also gives the **paired** difference to the
baseline: per seed (same data subset and initialisation) ``variant - baseline``, then the mean
and standard deviation of those differences.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmix_applied.metrics.temperature import at_bound

__all__ = [
    "MIN_SEEDS",
    "metric_direction",
    "metric_order",
    "mean_std",
    "metric_values",
    "paired_differences",
    "read_metrics_csv",
    "render_report",
    "summarize",
    "verdict_line",
    "variants_in_order",
    "verdicts",
    "short_name",
    "temperature_flag",
]

#: Seeds each side needs before a gap is called beyond (or within) the seed spread.
MIN_SEEDS = 3

_HIGHER = ("acc", "dice", "auroc", "iou", "f1", "precision", "recall")
_LOWER = ("nll", "ece", "brier", "cer", "wer", "hd95", "loss", "fpr", "error")


def metric_direction(name: str) -> str | None:
    """``"higher"``, ``"lower"`` (better) or ``None`` (no direction: temperature, spectra ...).

    Read from the name's words (split on ``/`` and ``_``, the ``_scaled`` suffix ignored):
    acc, dice, auroc ... are higher-better; nll, ece, brier, cer, wer, hd95, loss, fpr95 lower.
    """
    words = [w for w in re.split(r"[/_]", name.lower()) if w and w not in ("test", "val", "scaled")]
    for word in words:
        if any(word.startswith(k) for k in _LOWER):
            return "lower"
        if any(word.startswith(k) for k in _HIGHER):
            return "higher"
    return None


def short_name(name: str) -> str:
    return name[5:] if name.startswith("test/") else name


def metric_order(names: Iterable[str]) -> list[str]:
    """Metric names sorted (``test/`` ones first) with each ``X_scaled`` right after its raw ``X``."""
    names = sorted(set(names), key=lambda n: (not n.startswith("test/"), n))
    raw = [n for n in names if not n.endswith("_scaled")]
    ordered: list[str] = []
    for n in raw:
        ordered.append(n)
        if f"{n}_scaled" in names:
            ordered.append(f"{n}_scaled")
    ordered += [n for n in names if n.endswith("_scaled") and n[: -len("_scaled")] not in raw]
    return ordered


def metric_values(row: Mapping[str, Any]) -> dict[str, float]:
    values = {k: float(v) for k, v in (row.get("metrics") or {}).items() if isinstance(v, (int, float))}
    for k, v in (row.get("val") or {}).items():  # validation figures (compare.validation_figures): "val/..." keys
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k.startswith("val/"):
            values.setdefault(k, float(v))
    for k, v in (row.get("extra") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values.setdefault(k, float(v))
    if row.get("temperature") is not None:
        values.setdefault("temperature", float(row["temperature"]))
    return values


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def variants_in_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        if row["variant"] not in seen:
            seen.append(row["variant"])
    return seen


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{recipe: {metric: {variant: {"mean", "std", "n"}}}}`` over seeds."""
    grouped: dict[str, dict[str, dict[str, list[float]]]] = {}
    for row in rows:
        for metric, value in metric_values(row).items():
            grouped.setdefault(row["recipe"], {}).setdefault(metric, {}).setdefault(row["variant"], []).append(value)
    return {recipe: {metric: {v: dict(zip(("mean", "std"), mean_std(xs)), n=len(xs)) for v, xs in by_v.items()}
                     for metric, by_v in metrics.items()} for recipe, metrics in grouped.items()}


def verdicts(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per recipe and directed metric: the winner, its gap to the runner-up, and whether it is beyond the spread.

    Returns:
        ``{recipe: {metric: {"winner", "runner_up", "gap", "spread", "beyond_spread", "seeds"}}}``;
        ``winner`` is ``"tie"`` when the two best means are equal; ``beyond_spread`` is ``None``
        with a single variant or fewer than :data:`MIN_SEEDS` seeds on either side (``seeds``: the
        smaller count).
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for recipe, metrics in summarize(rows).items():
        for metric, by_v in metrics.items():
            direction = metric_direction(metric)
            if direction is None or not by_v:
                continue
            ranked = sorted(by_v.items(), key=lambda kv: kv[1]["mean"], reverse=direction == "higher")
            winner, best = ranked[0]
            if len(ranked) == 1:
                out.setdefault(recipe, {})[metric] = {"winner": winner, "runner_up": None, "gap": None,
                                                      "spread": None, "beyond_spread": None, "seeds": best["n"]}
                continue
            runner, second = ranked[1]
            gap = abs(best["mean"] - second["mean"])
            spread = max(best["std"], second["std"])
            seeds = min(best["n"], second["n"])
            beyond = None if math.isnan(spread) or seeds < MIN_SEEDS else bool(gap > spread)
            if gap == 0:
                winner, beyond = "tie", False
            out.setdefault(recipe, {})[metric] = {"winner": winner, "runner_up": runner, "gap": gap,
                                                  "spread": spread, "beyond_spread": beyond, "seeds": seeds}
    return out


def paired_differences(rows: Sequence[Mapping[str, Any]], *,
                       baseline: str = "none") -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{recipe: {metric: {variant: {"mean", "std", "n", "better"}}}}`` of per-seed ``variant - baseline``.

    Only seeds run for both the variant and the baseline count; ``better`` is how many of those
    seeds the variant beat the baseline on (``None`` for undirected metrics).
    """
    table: dict[tuple[str, str, int], dict[str, float]] = {(r["recipe"], r["variant"], int(r["seed"])): metric_values(r)
                                                           for r in rows}
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for (recipe, variant, seed), values in table.items():
        if variant == baseline or (recipe, baseline, seed) not in table:
            continue
        base = table[(recipe, baseline, seed)]
        for metric, value in values.items():
            if metric in base:
                cell = out.setdefault(recipe, {}).setdefault(metric, {}).setdefault(variant, {"diffs": []})
                cell["diffs"].append(value - base[metric])
    for recipe in out.values():
        for metric, by_v in recipe.items():
            direction = metric_direction(metric)
            for cell in by_v.values():
                diffs = cell.pop("diffs")
                cell["mean"], cell["std"] = mean_std(diffs)
                cell["n"] = len(diffs)
                cell["better"] = None if direction is None else sum(
                    (d > 0) if direction == "higher" else (d < 0) for d in diffs)
    return out


def verdict_line(rows: Sequence[Mapping[str, Any]], *, metric: str = "test/nll_scaled", variant: str = "manifold",
                 baseline: str = "none", label: str | None = None) -> str:
    """One sentence computed from the paired per-seed differences ``variant - baseline`` of ``metric``.

    "Beyond the seed spread" means the mean paired difference exceeds its standard deviation
    over seeds, judged with :data:`MIN_SEEDS` (3) seeds or more; with fewer the sentence says
    the seeds are too few.
    Whether the variant lowered or raised the metric, and whether that is a win, follows from
    :func:`metric_direction`.

    Raises:
        KeyError: no seed has both ``variant`` and ``baseline`` rows with ``metric``; the message
            lists the metrics the rows have.
    """
    found = {m: cells for recipe in paired_differences(rows, baseline=baseline).values() for m, cells in recipe.items()}
    cell = found.get(metric, {}).get(variant)
    if cell is None:
        raise KeyError(f"no paired seeds of {variant!r} against {baseline!r} report {metric!r}; received rows "
                       f"with metrics {sorted(found)}; run both variants with the same seeds")
    mean, std, n = cell["mean"], cell["std"], cell["n"]
    direction = metric_direction(metric)
    name = label or metric
    moved = "lowered" if mean < 0 else "raised" if mean > 0 else "left unchanged"
    won = (mean < 0) if direction == "lower" else (mean > 0) if direction == "higher" else None
    outcome = "" if won is None or mean == 0 else (" (mixing won)" if won else " (mixing lost)")
    if n < 2 or math.isnan(std):
        spread = "one seed: no seed spread to judge it against"
    elif n < MIN_SEEDS:
        spread = f"{n} seeds: too few to judge it against the seed spread (need {MIN_SEEDS} or more)"
    else:
        spread = "beyond the seed spread" if abs(mean) > std else "within the seed spread"
    size = f" by {abs(mean):.3f} ± {0.0 if math.isnan(std) else std:.3f}" if mean != 0 else ""
    better = f", better on {cell['better']} of {n} seeds" if cell.get("better") is not None else ""
    return (f"{variant} mixup {moved} {name}{size} (paired, {n} seed{'s' if n != 1 else ''}{better}) "
            f"against {baseline} — {spread}{outcome}.")


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _cell(stats: Mapping[str, float] | None) -> str:
    if not stats:
        return ""
    return f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])}" if stats.get("n", 1) > 1 else _fmt(stats["mean"])


def render_report(rows: Sequence[Mapping[str, Any]], *, command: str, baseline: str = "none",
                  plots: Mapping[str, Sequence[str]] | None = None) -> str:
    """The Markdown report: the command, one table per recipe, the verdicts, the paired differences."""
    lines = ["# Comparison report", "", "```", command, "```", ""]
    if not rows:
        return "\n".join(lines + ["No finished runs.", ""])
    variants = variants_in_order(rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    lines += [f"Variants: {', '.join(variants)}; seeds: {', '.join(map(str, seeds))}. Cells: mean ± sample std "
              "(ddof=1) over seeds; `_scaled` rows use the fitted temperature and follow their raw row. A lead is "
              "*beyond seed spread* when the gap to the runner-up exceeds the larger of their two stds, judged "
              f"with {MIN_SEEDS} seeds or more. `conf_gap` is mean confidence − accuracy (> 0 overconfident, "
              "< 0 underconfident); OOD AUROC and FPR95 treat in-distribution images as the positive class.", ""]
    summary, wins, paired = summarize(rows), verdicts(rows), paired_differences(rows, baseline=baseline)
    for recipe, metrics in summary.items():
        lines += [f"## {recipe}", "", "| metric | " + " | ".join(variants) + " | best | verdict |",
                  "|---" * (len(variants) + 3) + "|"]
        for metric in metric_order(metrics):
            win = wins.get(recipe, {}).get(metric)
            if win is None:
                best, verdict = "", "(no direction)" if metric_direction(metric) is None else ""
            elif win["runner_up"] is None:
                best, verdict = win["winner"], "one variant"
            else:
                best = win["winner"]
                if best == "tie":
                    verdict = "tie"
                elif win["beyond_spread"] is None and win["seeds"] < 2:
                    verdict = "one seed: spread unknown"
                elif win["beyond_spread"] is None:
                    verdict = f"{win['seeds']} seeds: too few to judge the spread (need {MIN_SEEDS})"
                elif win["beyond_spread"]:
                    verdict = f"beyond seed spread (gap {_fmt(win['gap'])} > {_fmt(win['spread'])})"
                else:
                    verdict = f"not beyond seed spread (gap {_fmt(win['gap'])} ≤ {_fmt(win['spread'])})"
            cells = " | ".join(_cell(metrics[metric].get(v)) for v in variants)
            if metric == "temperature":
                flagged = [f"{r['variant']} seed {r['seed']}" for r in rows
                           if r["recipe"] == recipe and temperature_flag(r)]
                verdict += f"; ⚠ fallback or at a bound: {', '.join(flagged)} (see Runs)" if flagged else ""
            lines.append(f"| {short_name(metric)} | {cells} | {best} | {verdict} |")
        lines.append("")
        others = [v for v in variants if v != baseline]
        if recipe in paired and others:
            lines += [f"Paired difference to `{baseline}` (per seed: variant − {baseline}; mean ± std over seeds; "
                      "seeds where the variant is better):", "",
                      "| metric | " + " | ".join(others) + " |", "|---" * (len(others) + 1) + "|"]
            for metric in metric_order(paired[recipe]):
                cells = []
                for v in others:
                    c = paired[recipe][metric].get(v)
                    if c is None:
                        cells.append("")
                        continue
                    better = "" if c["better"] is None else f" ({c['better']}/{c['n']} better)"
                    cells.append(f"{_fmt(c['mean'])} ± {_fmt(c['std'])}{better}")
                lines.append(f"| {short_name(metric)} | " + " | ".join(cells) + " |")
            lines.append("")
        for name in (plots or {}).get(recipe, ()):
            lines.append(f"![{Path(name).stem}]({name})")
        lines.append("")
    lines += ["## Runs", "", "| recipe | variant | seed | temperature | wall (s) | run |", "|---|---|---|---|---|---|"]
    for r in rows:
        flag = temperature_flag(r)
        lines.append(f"| {r['recipe']} | {r['variant']} | {r['seed']} | {_fmt(r.get('temperature'))}"
                     f"{f' ⚠ {flag}' if flag else ''} | {_fmt(r.get('wall_s'))} | {r['run_dir']} |")
    return "\n".join(lines) + "\n"


def temperature_flag(row: Mapping[str, Any]) -> str | None:
    """Why a run's temperature is not to be trusted: the engine fell back to ``T = 1`` (its note), or T is on a bound.

    A run tested before the fallback existed keeps its bounded T (0.05 or 20): that is flagged too.
    """
    note = (row.get("metrics") or {}).get("temperature_note")
    if isinstance(note, str) and note:
        return note
    t = row.get("temperature")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and at_bound(float(t)):
        return f"T = {float(t):g} is at its bound: the validation split could not fix a temperature"
    return None


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log as ``{column: [(epoch, value), ...]}`` for the columns starting with ``val/``."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key and key.startswith("val/") and value not in ("", None):
                    curves.setdefault(key, []).append((int(float(row.get("epoch") or 0)), float(value)))
    return curves
