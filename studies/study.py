"""The study behind ``docs/results.md``: every regime of issue #11 through ``compare``, one report.

    python studies/study.py [--quick] [--profile cpu|gpu] [--only NAME,...] [--seeds 0,1,2]
        [--out runs/study] [--budget-s SECONDS] [--accelerator cpu] [--list] [--variants none,...]
        [--cells CELL,...] [--report-only] [--publish docs/results]

For each regime of :data:`study_regimes.REGIMES` (a name, a config, overrides, variants, seeds)
it calls :func:`mmix_applied.compare.compare` into ``<out>/<regime>/`` (which resumes finished
runs), then writes ``<out>/results.md``: the goal check of issue #11 computed from the numbers,
and one section per regime headed by its exact command, with compare's own tables (mean ± std
over seeds, the winner and whether it beats the seed spread, the paired difference to ``none``),
the paired difference per seed for the key metrics, and the fitted temperatures. A regime whose
config keys do not exist yet is skipped with the config's error as the reason.

``--publish DIR`` copies each run regime's ``results.jsonl`` and PNGs to ``DIR/<regime>/``: the
rows are a few kB, so committed there they let ``--report-only --out DIR`` rebuild the report on
any clone, after the run folders (checkpoints, gigabytes) are gone.

``--quick`` is a smoke run (tiny models, 1 epoch, 2 batches, 2 seeds; about a minute on a
2-core CPU): it proves the driver, its numbers mean nothing. ``--profile gpu`` uses the run
lengths and batch sizes sized for one H200 (see ``studies/study_gpu.sh``).

Run as a script (``python studies/study.py``): Python puts ``studies/`` first on the import path,
which is how :mod:`study_regimes` is found; the package is used through its public modules only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from study_regimes import (
    GOALS,
    KEY_METRICS,
    REGIMES,
    SELECT,
    Regime,
    choose,
    chosen_rows,
    grid_cells,
    groups,
    pool,
)

from mmix_applied.compare import compare
from mmix_applied.config import load_config
from mmix_applied.reports.comparison import paired_differences, render_report, summarize
from mmix_applied.utils.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["assemble", "main", "publish", "run_regime"]

REPO = Path(__file__).resolve().parents[1]
PROFILES = {
    "cpu": ("train.accelerator=cpu", "train.devices=1", "train.enable_progress_bar=false", "train.loggers=[csv]"),
    "gpu": ("train.accelerator=gpu", "train.devices=1", "train.precision=bf16-mixed",
            "train.enable_progress_bar=false", "train.loggers=[csv]"),
}
QUICK = ("train.max_epochs=1", "train.limit_train_batches=2", "train.limit_val_batches=1",
         "train.limit_test_batches=2", "train.limit_predict_batches=2", "train.log_every_n_steps=1",
         "train.check_val_every_n_epoch=1")


def regime_overrides(regime: Regime, *, profile: str, quick: bool, accelerator: str | None) -> list[str]:
    """Every override of one regime's runs, later ones winning: profile, regime, sizes, quick, accelerator."""
    out = [*PROFILES[profile], *regime.overrides, *regime.sizes.get(profile, ())]
    if quick:
        out += [*QUICK, *regime.sizes.get("quick", ())]
    if accelerator:
        out += [f"train.accelerator={accelerator}"] + (["train.precision=32"] if accelerator == "cpu" else [])
    return out


def _compare_command(config: str, variants: Sequence[str], seeds: Sequence[int], out: Path,
                     overrides: Sequence[str]) -> str:
    return " ".join(["mmix-applied compare -c", config, "--variants", ",".join(variants), "--seeds",
                     ",".join(map(str, seeds)), "--out", str(out), *map(shlex.quote, overrides)])


def _unavailable(config: Path, overrides: Sequence[str]) -> str | None:
    """Why the regime cannot run yet (the config's own error), or ``None``."""
    try:
        load_config(config, list(overrides))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _rows(out: Path) -> list[dict[str, Any]]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_regime(regime: Regime, *, out: Path, seeds: Sequence[int], overrides: Sequence[str],
               deadline: float | None, quick: bool = False, report_only: bool = False,
               only_variants: Sequence[str] | None = None, only_cells: Sequence[str] | None = None) -> dict[str, Any]:
    """Run one regime (every cell of a map; 2 with ``quick``) unless skipped; returns its record for :func:`assemble`.

    ``report_only``: train nothing; a cell counts as run where its ``results.jsonl`` is on disk.
    ``only_variants``: run only these of the regime's variants (the report still shows every run on disk).
    ``only_cells``: of a map, run only these cells (two processes can then share one map's cells).
    """
    config = REPO / regime.config
    cells = grid_cells(regime)[: 2 if quick else None] or [(None, ())]
    variants = (regime.quick_variants or regime.variants) if quick else regime.variants
    if only_variants is not None:
        variants = tuple(v for v in variants if v in only_variants)
    record: dict[str, Any] = {"name": regime.name, "skipped": None, "cells": []}
    for cell, cell_overrides in cells:
        runs_out = out / regime.name / (cell or "")
        every = [*overrides, *cell_overrides]
        reason = _unavailable(config, every)
        if reason is None and cell is not None and only_cells is not None and cell not in only_cells:
            reason = "not in --cells"
        if reason is None and not variants:
            reason = f"none of its variants ({', '.join(regime.variants)}) is in --variants {','.join(only_variants)}"
        if reason is None and report_only and not (runs_out / "results.jsonl").is_file():
            reason = "not run (no results under --out)"
        if reason is None and deadline is not None and time.monotonic() > deadline:
            reason = "not run: the study's time budget (--budget-s) was spent"
        command = _compare_command(regime.config, variants, seeds, runs_out, every)
        if reason is not None:
            print(f"study: {regime.name}{'/' + cell if cell else ''} skipped: {reason}", flush=True)
            record["cells"].append({"cell": cell, "skipped": reason, "command": command, "out": str(runs_out)})
            continue
        if not report_only:
            print(f"study: {regime.name}{'/' + cell if cell else ''}: {command}", flush=True)
            compare(config, variants=variants, seeds=seeds, overrides=every, out_dir=runs_out, command=command,
                    spectrum_point=regime.spectrum_point)
        record["cells"].append({"cell": cell, "skipped": None, "command": command, "out": str(runs_out)})
    if all(c["skipped"] for c in record["cells"]):
        record["skipped"] = record["cells"][0]["skipped"]
    return record


# ------------------------------------------------------------------------------------------ report
def _fmt(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.4g}"


def _demote(markdown: str, title: str) -> str:
    """compare's report as one section: its title replaced, every heading one level down."""
    lines = markdown.splitlines()
    body = [("#" + line) if line.startswith("#") else line for line in lines[1:]]
    return "\n".join([f"## {title}", *body])


def _per_seed(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The paired difference to ``none`` of each seed for the recipe's key metrics, and the temperatures."""
    if not rows:
        return []
    recipe = rows[0]["recipe"]
    keys = KEY_METRICS.get(recipe, ())
    base = {r["seed"]: r for r in rows if r["variant"] == "none"}
    others = [r for r in rows if r["variant"] != "none" and r["seed"] in base]
    if not others or not keys:
        return []
    lines = ["Per seed (variant − none, same seed: same data subset and initialisation):", "",
             "| variant | seed | " + " | ".join(f"Δ {k.removeprefix('test/')}" for k in keys) + " |",
             "|---" * (len(keys) + 2) + "|"]
    for r in sorted(others, key=lambda r: (r["variant"], r["seed"])):
        b = base[r["seed"]]
        cells = [_fmt(r["metrics"][k] - b["metrics"][k]) if k in r["metrics"] and k in b["metrics"] else "–"
                 for k in keys]
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(cells) + " |")
    temps = ", ".join(f"{r['variant']} s{r['seed']}: {_fmt(r.get('temperature'))}"
                      for r in sorted(rows, key=lambda r: (r["seed"], r["variant"])))
    return [*lines, "", f"Fitted temperatures: {temps}.", ""]


def _map_section(regime: Regime, record: Mapping[str, Any], baseline_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per cell: its means and its paired difference to the baseline's ``none`` runs."""
    rows = [dict(r) for r in baseline_rows if r["variant"] == "none"]
    for cell in record["cells"]:
        rows += [{**r, "variant": cell["cell"]} for r in _rows(Path(cell["out"]))]
    if len(rows) == len([r for r in baseline_rows if r["variant"] == "none"]):
        return ["No cell finished."]
    recipe = rows[-1]["recipe"]
    summary = summarize(rows).get(recipe, {})
    paired = paired_differences(rows, baseline="none").get(recipe, {})
    keys = [k for k in KEY_METRICS[recipe] if k in summary]
    found = "found" if baseline_rows else "missing: run that regime too"
    lines = [f"Paired baseline: the `none` runs of `{regime.baseline}` ({found})."
             " Cells: mean ± std over seeds; Δ: mean ± std of the per-seed difference to none (seeds better).", "",
             "| cell | " + " | ".join(k.removeprefix("test/") for k in keys) + " | Δ nll_scaled | Δ acc |",
             "|---" * (len(keys) + 3) + "|"]
    for variant in ["none", *(c["cell"] for c in record["cells"])]:
        cells = []
        for k in keys:
            s = summary.get(k, {}).get(variant)
            cells.append("" if s is None else f"{_fmt(s['mean'])} ± {_fmt(s['std'])}")
        deltas = []
        for k in ("test/nll_scaled", "test/acc"):
            c = paired.get(k, {}).get(variant)
            deltas.append("" if c is None else f"{_fmt(c['mean'])} ± {_fmt(c['std'])} ({c['better']}/{c['n']})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " | " + " | ".join(deltas) + " |")
    skipped = [c for c in record["cells"] if c["skipped"]]
    if skipped:
        lines += ["", f"{len(skipped)} cell(s) not run: {skipped[0]['skipped']}"]
    return lines


def _mean_std(cell: Mapping[str, float] | None) -> str:
    """``mean ± std`` of a :func:`summarize` cell (the mean alone for one seed, ``–`` when absent)."""
    if not cell:
        return "–"
    return _fmt(cell["mean"]) if cell["n"] == 1 else f"{_fmt(cell['mean'])} ± {_fmt(cell['std'])}"


def _selection_section(root: Regime, pooled: Sequence[Mapping[str, Any]]) -> list[str]:
    """One group's pooled table (validation figure first) and the setting chosen per kind."""
    title = root.title.rsplit(",", 1)[0]
    if not pooled:
        return [f"### {title}", "", "No finished runs.", ""]
    recipe = pooled[0]["recipe"]
    metric = SELECT[recipe]
    keys = [metric, *KEY_METRICS[recipe]] + (["temperature"] if recipe != "handwriting" else [])
    stats = summarize(pooled).get(recipe, {})
    paired = paired_differences(pooled, baseline="none").get(recipe, {})
    delta_key = "test/nll_scaled" if recipe != "handwriting" else "test/cer"
    lines = [f"### {title}", "",
             f"Settings are chosen on `{metric}` (validation split; mean over the seeds of `none`); the test "
             f"figures are reported, not used to choose. Δ: mean ± std of the per-seed `{delta_key}` difference to "
             "`none` (seeds better / seeds).", "",
             "| variant | seeds | " + " | ".join(k for k in keys) + f" | Δ {delta_key} |",
             "|---" * (len(keys) + 3) + "|"]
    for variant in dict.fromkeys(r["variant"] for r in pooled):
        n = sum(1 for r in pooled if r["variant"] == variant)
        c = paired.get(delta_key, {}).get(variant)
        delta = "" if c is None else f"{_fmt(c['mean'])} ± {_fmt(c['std'])} ({c['better']}/{c['n']})"
        cells = [_mean_std(stats.get(k, {}).get(variant)) for k in keys]
        lines.append(f"| {variant} | {n} | " + " | ".join(cells) + f" | {delta} |")
    lines.append("")
    choice = choose(pooled)
    for kind in ("input", "manifold"):
        if kind not in choice:
            continue
        c = choice[kind]
        others = ", ".join(f"`{v}` {_fmt(m)}" for v, m in c["candidates"].items() if v != c["variant"])
        lines.append(f"- **{kind}: `{c['variant']}`** chosen ({metric} {_fmt(c['mean'])}"
                     + (f"; the others: {others}" if others else "") + ").")
    return [*lines, ""]


def assemble(records: Sequence[Mapping[str, Any]], *, command: str, header: Sequence[str] = ()) -> str:
    """``results.md``: the goal check, the settings chosen on validation figures, then one section per regime."""
    by_name = {r["name"]: r for r in records}
    regimes = {r.name: r for r in REGIMES}
    rows_of = {name: _rows(Path(rec["cells"][0]["out"])) if not regimes[name].grid else []
               for name, rec in by_name.items()}
    pooled = {root: pool(rows_of, [m for m in members if m.name in by_name])
              for root, members in groups().items() if root in by_name}
    # A map's cells are candidate settings of its baseline's group, chosen on validation like the others.
    for name, rec in by_name.items():
        base = regimes[name].baseline
        if regimes[name].grid and base in by_name and not regimes[base].grid:
            cells = [{**r, "variant": f"{r['variant']} {c['cell']}"} for c in rec["cells"] if not c["skipped"]
                     for r in _rows(Path(c["out"]))]
            if cells:
                pooled[base] = (pooled.get(base) or pool(rows_of, [regimes[base]])) + cells
    goal_rows = {**rows_of, **{root: chosen_rows(rows, choose(rows)) for root, rows in pooled.items()}}
    lines = ["# Study results", "", "```", command, "```", "", *header, "",
             "## Goals (issue #11), checked from the numbers below", "", "| goal | regime | status | numbers |",
             "|---|---|---|---|"]
    for goal in GOALS:
        for name in goal.regimes:
            rec = by_name.get(name)
            if rec is None:
                status, detail = "not measured", "regime not selected in this study run"
            elif rec["skipped"]:
                status, detail = "not measured", f"skipped: {rec['skipped'].split('. ')[0]} (see its section)"
            else:
                status, detail = goal.check(goal_rows[name])
                seeds = sorted({int(r["seed"]) for r in goal_rows[name] if r["variant"] == "none"})
                detail = f"seeds {', '.join(map(str, seeds)) or 'none'}; {detail}"
                if name in pooled:
                    picked = ", ".join(f"{k}: `{c['variant']}`" for k, c in choose(pooled[name]).items())
                    detail = f"settings chosen on validation ({picked}); {detail}"
            lines.append(f"| {goal.text} | {name} | **{status}** | {detail.replace('|', '/')} |")
    lines.append("")
    if pooled:
        lines += ["## Settings chosen on validation figures", ""]
        for root, rows in pooled.items():
            lines += _selection_section(regimes[root], rows)
    for rec in records:
        regime = regimes[rec["name"]]
        if rec["skipped"]:
            lines += [f"## {regime.title}", "", "```", rec["cells"][0]["command"], "```", "",
                      f"Skipped: {rec['skipped']}", ""]
            continue
        if regime.grid:
            cmd = "\n".join(c["command"] for c in rec["cells"] if not c["skipped"])
            base = rows_of.get(regime.baseline) or _rows(Path(rec["cells"][0]["out"]).parents[1] / regime.baseline)
            lines += [f"## {regime.title}", *(["", regime.note] if regime.note else []), "", "```", cmd, "```", "",
                      *_map_section(regime, rec, base), ""]
            continue
        rows = rows_of[rec["name"]]
        out = Path(rec["cells"][0]["out"])
        plots = {rows[0]["recipe"]: [f"{regime.name}/{p.name}" for p in sorted(out.glob("*.png"))]} if rows else {}
        section = _demote(render_report(rows, command=rec["cells"][0]["command"], plots=plots), regime.title)
        head, body = section.split("\n", 1)
        lines += [head, *(["", regime.note] if regime.note else []), body, "", *_per_seed(rows)]
    return "\n".join(lines) + "\n"


def publish(records: Sequence[Mapping[str, Any]], dest: Path) -> list[Path]:
    """Copy each finished cell's ``results.jsonl`` and PNGs to ``dest/<regime>[/<cell>]/``; returns the files written.

    Files are written atomically; a cell's own folder is the target, so ``--report-only --out dest`` finds them.
    """
    written = []
    for rec in records:
        for cell in rec["cells"]:
            src = Path(cell["out"])
            if cell["skipped"] or not (src / "results.jsonl").is_file():
                continue
            target = dest / rec["name"] / (cell["cell"] or "")
            for f in [src / "results.jsonl", *sorted(src.glob("*.png"))]:
                if f.resolve() != (target / f.name).resolve():
                    written.append(atomic_write_bytes(target / f.name, f.read_bytes()))
    return written


def _machine(profile: str) -> list[str]:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return [f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {device}, "
            f"{platform.platform()}; torch {torch.__version__}; profile `{profile}`."]


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the selected regimes and write ``<out>/results.md``; returns its path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (about a minute on CPU)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="run lengths and batch sizes")
    parser.add_argument("--only", default=None, help="comma-separated regime names (see --list)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick: 0,1)")
    parser.add_argument("--out", default=None, help="output folder (default runs/study; --quick: runs/study-quick, "
                        "so that a real study never resumes the smoke runs)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no regime after this many seconds")
    parser.add_argument("--accelerator", default=None, help="force train.accelerator (e.g. cpu for a smoke run)")
    parser.add_argument("--list", action="store_true", help="print the regimes and exit")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write results.md from the runs already under --out")
    parser.add_argument("--variants", default=None,
                        help="comma-separated: run only these variants of each regime (e.g. none)")
    parser.add_argument("--cells", default=None,
                        help="comma-separated cell names of a map regime to run (default: all; see its section)")
    parser.add_argument("--publish", default=None, metavar="DIR",
                        help="copy each regime's results.jsonl and PNGs to DIR/<regime>/ (e.g. docs/results)")
    args = parser.parse_args(argv)
    if args.list:
        for r in REGIMES:
            print(f"{r.name:18s} {r.config:32s} {r.title}")
        raise SystemExit(0)
    names = [r.name for r in REGIMES]
    chosen = [r for r in REGIMES if (r.quick or not args.quick)] if args.only is None else []
    for name in (args.only.split(",") if args.only else []):
        if name.strip() not in names:
            parser.error(f"--only: unknown regime {name.strip()!r}; received {args.only!r}. Valid: {', '.join(names)}")
        chosen.append(REGIMES[names.index(name.strip())])
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([0, 1] if args.quick else [0, 1, 2])
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers such as 0,1,2; received {args.seeds!r}")
    only_variants = None
    if args.variants:
        only_variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        known = sorted({v for r in REGIMES for v in r.variants})
        bad = [v for v in only_variants if v not in known]
        if bad or not only_variants:
            parser.error(f"--variants: unknown variant(s) {bad or args.variants!r}; valid: {', '.join(known)}")
    only_cells = [c.strip() for c in args.cells.split(",") if c.strip()] if args.cells else None
    if only_cells is not None:
        known_cells = [name for r in chosen for name, _ in grid_cells(r)]
        bad = [c for c in only_cells if c not in known_cells]
        if bad or not only_cells:
            parser.error(f"--cells: unknown cell(s) {bad or args.cells!r} in the selected regimes; valid: "
                         f"{', '.join(known_cells) or '(no map regime selected: add one with --only)'}")
    out = Path(args.out or ("runs/study-quick" if args.quick else "runs/study"))
    start = time.monotonic()
    deadline = None if args.budget_s is None else start + args.budget_s
    records = []
    for regime in chosen:
        overrides = regime_overrides(regime, profile=args.profile, quick=args.quick, accelerator=args.accelerator)
        records.append(run_regime(regime, out=out, seeds=seeds, overrides=overrides, deadline=deadline,
                                  quick=args.quick, report_only=args.report_only, only_variants=only_variants,
                                  only_cells=only_cells))
    command = " ".join(shlex.quote(a) for a in ["python", "studies/study.py", *(argv if argv is not None
                                                                                 else sys.argv[1:])])
    header = _machine(args.profile) + ([
        "Assembled from the runs already under the output folder (`--report-only`): nothing was trained by this "
        "command; each section's `compare` command made its runs."] if args.report_only else
        [f"Wall time of this invocation: {time.monotonic() - start:.0f} s."])
    if args.quick:
        header.append("**--quick smoke run: tiny models, 1 epoch, 2 batches. These numbers mean nothing.**")
    report = atomic_write_text(out / "results.md", assemble(records, command=command, header=header))
    print(f"study: {report}")
    if args.publish:
        files = publish(records, Path(args.publish))
        print(f"study: published {len(files)} file(s) to {args.publish}")
    return report


if __name__ == "__main__":
    main()
