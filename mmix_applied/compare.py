"""``compare``: train every mixing variant with the same seeds and data, test each, write one report.

The question a user asks of Manifold Mixup (Verma et al., ICML 2019) is whether it pays on *their*
data. :func:`compare` answers it: for each seed and each variant (``none``, ``input``,
``manifold``) it trains the same config with only ``mix.variant`` changed (same seed, so the same
data subset, initialisation and data order), tests the last checkpoint, and writes into
``out_dir``::

    runs/<variant>-seed<k>/   each run's directory (config, checkpoints, logs, test_metrics.json,
                              compare_row.json: its row once everything it owes is on disk)
    .claims/<variant>-seed<k> the lock of the process running that run (PID and host inside)
    results.jsonl             one row per run (see mmix_applied.reports.comparison)
    report.md                 tables, verdicts, paired differences, plots
    *.png                     validation curves, reliability diagrams, metric bars, spectra

It resumes, and it shares: a finished run is not trained or tested again, a run killed after its
fit is only tested, one killed mid-training continues from its ``last.ckpt``; several processes
given the same ``out_dir`` split the runs between them (:mod:`mmix_applied.engine.claims`). A
re-run whose settings differ from the runs on disk is refused with the changed keys. The
statistics and plots are the pure functions of :mod:`mmix_applied.reports.comparison`.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from mmix_applied.engine import MixupModule, fit, get_recipe, load_checkpoint, predict, test
from mmix_applied.engine.claims import check_writable, claim, config_changes, fit_finished, holder
from mmix_applied.engine.config import load_config
from mmix_applied.metrics import ExpectedCalibrationError, calibration_curve
from mmix_applied.metrics.spectrum import ClassSpectra, class_spectra, collect_states
from mmix_applied.reports.comparison import render_report, temperature_flag
from mmix_applied.reports.figures import (
    plot_metric_bars,
    plot_pooled_reliability,
    plot_spectra,
    plot_validation_curves,
)
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["CLAIMS", "ROW_FILE", "VARIANTS", "check_seeds_and_overrides", "checkpoint_spectrum", "clock", "compare",
           "pooled_reliability", "read_predictions", "reliability_bins", "run_name", "validation_figures"]

VARIANTS = ("none", "input", "manifold")
CLAIMS = ".claims"  # out_dir/.claims/<run name>: the lock of the process running that run
ROW_FILE = "compare_row.json"  # a run's row, written when everything it owes is on disk
_OWNED = ("mix.variant", "seed", "run.dir", "run.name")


def run_name(variant: str, seed: int) -> str:
    """The run directory name of one variant and seed inside ``out_dir/runs``."""
    return f"{variant}-seed{seed}"


def _check(variants: Sequence[str], seeds: Sequence[int], overrides: Sequence[str]) -> None:
    if not variants:
        raise ValueError(f"variants is empty; pass some of {', '.join(VARIANTS)}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad or len(set(variants)) != len(variants):
        raise ValueError(f"variants must be distinct names from {', '.join(VARIANTS)}; received {list(variants)}")
    check_seeds_and_overrides(seeds, overrides, tool="compare", fix=". Use --variants / --seeds / --out instead")


def check_seeds_and_overrides(seeds: Sequence[int], overrides: Sequence[str], *, tool: str, fix: str = "") -> None:
    """Seeds are distinct integers (at least one); no override sets a key ``tool`` sets per run (``mix.variant``,
    ``seed``, ``run.dir``, ``run.name``). ``compare`` and ``tune`` share it.

    Raises:
        ValueError: Naming what was received; ``fix`` ends the override message.
    """
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             for s in seeds):
        raise ValueError(f"seeds must be distinct integers, at least one; received {list(seeds)}")
    for item in overrides:
        key = str(item).split("=", 1)[0].strip()
        if key in _OWNED:
            raise ValueError(f"override {item!r} sets {key}, which {tool} sets per run; received it in "
                             f"overrides{fix}")


def read_predictions(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """RAW ``(probs (N, C), target (N,))`` from a classification ``predictions.csv`` (rows without a target dropped).

    A file written with a temperature (its ``temperature`` column, T != 1) is brought back to raw
    probabilities: ``softmax(T * log p)`` undoes ``softmax(z / T)`` exactly, up to the CSV's 6 decimals.
    """
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        columns = [i for i, h in enumerate(header) if h.startswith("p_")]
        classes = [header[i][2:] for i in columns]
        target_at = header.index("target")
        t_at = header.index("temperature") if "temperature" in header else None
        probs, target, temps = [], [], []
        for row in reader:
            if row and row[target_at] in classes:
                probs.append([float(row[i]) for i in columns])
                target.append(classes.index(row[target_at]))
                temps.append(float(row[t_at]) if t_at is not None else 1.0)
    p = torch.tensor(probs, dtype=torch.float64).reshape(-1, len(classes))
    t = torch.tensor(temps, dtype=torch.float64).reshape(-1, 1)
    if bool((t != 1).any()):
        p = torch.where(t != 1, torch.softmax(p.clamp_min(1e-12).log() * t, dim=1), p)
    return p, torch.tensor(target, dtype=torch.long)


def reliability_bins(probs: torch.Tensor, target: torch.Tensor, *, temperature: float | None = None,
                     n_bins: int = 15) -> dict[str, dict[str, torch.Tensor]]:
    """``{"raw": bins, "scaled": bins}`` of probabilities; ``scaled`` applies ``temperature`` to their logs.

    ``softmax(log p / T)`` is exactly the calibrated distribution of ``softmax(z / T)`` for logits
    ``z`` with ``p = softmax(z)`` (the log-sum-exp shift cancels), up to the 6 decimals of the CSV.
    """
    out = {}
    for kind, t in (("raw", None), ("scaled", temperature)):
        if kind == "scaled" and t is None:
            continue
        p = probs if t is None else torch.softmax(probs.clamp_min(1e-12).log() / t, dim=1)
        metric = ExpectedCalibrationError(n_bins=n_bins, from_logits=False)
        metric.update(p, target)
        out[kind] = metric.bins()
    return out


def _curve(probs: torch.Tensor, target: torch.Tensor, *, n_bins: int, min_per_bin: int) -> dict[str, torch.Tensor]:
    """Equal-width bins when every one of ``n_bins`` could hold ``min_per_bin`` predictions on average
    (``n >= n_bins * min_per_bin``), else equal-mass bins of at least ``min_per_bin`` each (at least 2 bins)."""
    n = len(target)
    if n >= n_bins * min_per_bin:
        return calibration_curve(probs, target, n_bins=n_bins, from_logits=False)
    return calibration_curve(probs, target, n_bins=max(2, min(n_bins, n // min_per_bin)), equal_mass=True,
                             from_logits=False)


def pooled_reliability(runs: Sequence[tuple[int, torch.Tensor, torch.Tensor, float | None]], *, n_bins: int = 15,
                       min_per_bin: int = 25) -> dict[str, dict[str, Any]]:
    """Reliability bins of one variant's seeds pooled, and of each seed, raw and scaled.

    Args:
        runs: ``(seed, raw probs (N, C), target (N,), temperature or None)`` per seed; each seed's
            probabilities are scaled by its own temperature before pooling.
        n_bins: Equal-width bins when the data allow.
        min_per_bin: Fewer predictions than ``n_bins * min_per_bin`` (pooled, or per seed) give
            equal-mass bins of at least this many each, so sparse bins cannot make the curve zig-zag.

    Returns:
        ``{"raw": {"pooled": bins, "per_seed": {seed: bins}}, "scaled": ...}`` (``scaled`` only when
        every seed has a temperature).
    """
    out: dict[str, dict[str, Any]] = {}
    for kind in ("raw", "scaled"):
        if kind == "scaled" and any(t is None for _, _, _, t in runs):
            continue
        scaled = [(seed, p if kind == "raw" else torch.softmax(p.clamp_min(1e-12).log() / t, dim=1), y)
                  for seed, p, y, t in runs]
        out[kind] = {
            "pooled": _curve(torch.cat([p for _, p, _ in scaled]), torch.cat([y for _, _, y in scaled]),
                             n_bins=n_bins, min_per_bin=min_per_bin),
            "per_seed": {seed: _curve(p, y, n_bins=n_bins, min_per_bin=min_per_bin) for seed, p, y in scaled},
        }
    return out


def checkpoint_spectrum(config: Any, checkpoint: Path, point: str, *, max_samples: int = 2000) -> dict[str, Any]:
    """The class-conditional spectra at ``point`` of ``checkpoint``'s model on its test split.

    Returns:
        :meth:`ClassSpectra.as_dict` with the singular values.
    """
    recipe = get_recipe(config.recipe)(config)
    module = MixupModule(config, recipe)
    module.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    try:
        states, labels = collect_states(module.model, recipe.build_datamodule().test_dataloader(), point,
                                        split_batch=recipe.split_batch, max_samples=max_samples)
    finally:
        if module.mixer is not None:
            module.mixer.close()
    return class_spectra(states, labels).as_dict(values=True)


_spectrum = checkpoint_spectrum  # what compare() calls (tests replace it)
_wait = time.sleep  # how compare waits for runs another process holds (tests replace it)


def validation_figures(run_dir: str | os.PathLike) -> dict[str, float]:
    """The validation figures of a run's ``last.ckpt`` (what settings are chosen on; test figures are only reported).

    The last validation epoch's metrics from ``fit_summary.json`` (``val/acc``, ``val/nll``, ...; ``val/mean_dice``
    for segmentation, ``val/cer`` for handwriting) and, where a temperature was fitted, ``val/nll_scaled``: the
    validation NLL at that temperature (from ``temperature.json``; the split T was fitted on, so it is the best
    NLL one temperature reaches there). ``{}`` when the run wrote neither file.
    """
    run_dir = Path(run_dir)
    out: dict[str, float] = {}
    summary, temps = run_dir / "fit_summary.json", run_dir / "temperature.json"
    if summary.is_file():
        last = (json.loads(summary.read_text()).get("last") or {}).get("metrics") or {}
        out.update({k: float(v) for k, v in last.items() if isinstance(v, (int, float))})
    if temps.is_file():
        value = (json.loads(temps.read_text()).get("val_nll_scaled") or {}).get("last.ckpt")
        if isinstance(value, (int, float)):
            out["val/nll_scaled"] = float(value)
    return out


def clock(seconds: float) -> str:
    """``H:MM:SS`` of a duration in seconds (the progress lines of compare and tune)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _read_rows(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["run_dir"]] = row
    return rows


def _config(config_path: str | os.PathLike, overrides: Sequence[str], variant: str, seed: int, runs_root: Path,
            name: str) -> Any:
    """One run's config; ``run.dir`` is set on the config, not through an override (any folder name works)."""
    config = load_config(config_path, [*overrides, f"mix.variant={variant}", f"seed={seed}"])
    config.run.dir, config.run.name = str(runs_root), name
    return config


def _refuse_changed(configs: dict[tuple[str, int], Any], runs_root: Path, out: Path) -> None:
    """Refuse a re-run whose settings differ from the runs already in ``out`` (naming the keys)."""
    changed: dict[str, list[str]] = {}
    for (variant, seed), config in configs.items():
        for change in config_changes(runs_root / run_name(variant, seed), config):
            changed.setdefault(change, []).append(run_name(variant, seed))
    if changed:
        listed = "; ".join(f"{change} (in {', '.join(names)})" for change, names in changed.items())
        raise ValueError(f"compare --out {str(out)!r} holds runs made with other settings: {listed}. Their results "
                         "would be reported under this command; rerun with the earlier settings to resume them, or "
                         "pass another --out to start a new comparison")


def _finished_row(run_dir: Path, *, needs_predictions: bool, spectrum_point: str | None) -> dict[str, Any] | None:
    """The unit's saved row when everything it owes is on disk, else ``None``."""
    row_path = run_dir / ROW_FILE
    if not (row_path.is_file() and (run_dir / "test_metrics.json").is_file()):
        return None
    if needs_predictions and not (run_dir / "predictions.csv").is_file():
        return None
    spectrum = run_dir / f"spectrum_{spectrum_point}.json"
    if spectrum_point and not spectrum.is_file():
        return None
    row = json.loads(row_path.read_text())
    if spectrum_point and (row.get("extra") or {}).get("spectrum_file") != str(spectrum):
        return None
    return row


def _run_unit(config_path: str | os.PathLike, config: Any, overrides: Sequence[str], variant: str, seed: int,
              run_dir: Path, *, previous: dict[str, Any], predictions: bool,
              spectrum_point: str | None) -> dict[str, Any]:
    """Do what one run still owes (fit, test, predictions, spectrum; never a finished fit again); its row."""
    t0, worked = time.monotonic(), False
    if not fit_finished(run_dir):
        resume = run_dir if (run_dir / "checkpoints" / "last.ckpt").is_file() else None
        fit(config, resume=resume)
        config = _config(config_path, overrides, variant, seed, run_dir.parent, run_dir.name)
        worked = True
    if (run_dir / "test_metrics.json").is_file():
        metrics = json.loads((run_dir / "test_metrics.json").read_text())
    else:
        metrics, worked = test(config, checkpoint=f"{run_dir}:last"), True  # the last checkpoint, as documented
    extra: dict[str, Any] = dict(previous.get("extra") or {})
    if config.recipe == "classification":
        pred_path = run_dir / "predictions.csv"
        if predictions and not pred_path.is_file():  # raw: the reliability diagrams apply T themselves
            predict(config, checkpoint=f"{run_dir}:last", output=pred_path, raw=True)
        spectrum_path = run_dir / f"spectrum_{spectrum_point}.json"
        if spectrum_point and not spectrum_path.is_file():
            found = _spectrum(config, run_dir / "checkpoints" / "last.ckpt", spectrum_point)
            atomic_write_text(spectrum_path, json.dumps({"point": spectrum_point, **found}))
        if spectrum_point:
            extra["spectrum_file"] = str(spectrum_path)
            extra["spectrum/mean_directions"] = json.loads(spectrum_path.read_text())["mean_directions"]
    wall = time.monotonic() - t0 if worked else previous.get("wall_s")
    row = {"recipe": config.recipe, "variant": variant, "seed": seed, "run_dir": str(run_dir), "metrics": metrics,
           "val": validation_figures(run_dir), "temperature": metrics.get("temperature"), "wall_s": wall,
           "extra": extra}
    atomic_write_text(run_dir / ROW_FILE, json.dumps(row, sort_keys=True))
    return row


def compare(config_path: str | os.PathLike, *, variants: Sequence[str] = VARIANTS, seeds: Sequence[int] = (0, 1, 2),
            overrides: Iterable[str] = (), out_dir: str | os.PathLike = "runs/compare", command: str | None = None,
            predictions: bool = True, spectrum_point: str | None = None,
            log: Callable[[str], Any] = print, poll_s: float = 10.0) -> Path:
    """Train and test ``variants x seeds`` of one config; write ``results.jsonl``, ``report.md`` and plots.

    Each run (variant x seed) is one unit of work, claimed through a lock in ``out_dir/.claims``
    (:mod:`mmix_applied.engine.claims`), so several processes given the same ``out_dir`` share the
    comparison: each does the runs nobody holds, then waits for the others' (naming their PID), and
    every process writes the same report at the end. A finished fit is never redone: a run killed
    after its fit is only tested, one killed mid-fit resumes from ``last.ckpt``.

    Args:
        config_path: The recipe's YAML config: a path, or a shipped recipe config's name (``classification``).
        variants: Values of ``mix.variant`` to compare; the first ``none`` present is the paired baseline.
        seeds: Top-level ``seed`` values; every variant runs with each.
        overrides: Dotted overrides applied to every run (not ``mix.variant``, ``seed``, ``run.*``).
        out_dir: Where runs, rows, report and plots go.
        command: The command line printed at the top of the report (default: this process's).
        predictions: For classification, also predict the test split to draw reliability diagrams.
        spectrum_point: For classification, a module name whose class-conditional spectrum to report.
        log: Progress sink (one line per run: ``[3/9] manifold seed 0 ... (elapsed, ETA)``).
        poll_s: Seconds between looks at runs another process holds.

    Returns:
        The path of ``report.md``.

    Raises:
        ValueError: Bad variants, seeds or overrides, or ``out_dir`` holds runs made with other settings
            (the message lists the changed keys).
        RunWriteError: ``out_dir`` cannot be written.
    """
    variants, seeds, overrides = tuple(variants), tuple(seeds), tuple(str(o) for o in overrides)
    _check(variants, seeds, overrides)
    out = Path(out_dir)
    runs_root = out / "runs"
    command = command or " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    jobs = [(variant, seed) for seed in seeds for variant in variants]
    configs = {(v, s): _config(config_path, overrides, v, s, runs_root, run_name(v, s)) for v, s in jobs}
    _refuse_changed(configs, runs_root, out)
    check_writable(out, flag="--out")
    previous = _read_rows(out / "results.jsonl")
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    held: set[tuple[str, int]] = set()
    start, trained_time, trained = time.monotonic(), 0.0, 0
    while len(rows) < len(jobs):
        progressed = False
        for i, (variant, seed) in enumerate(jobs, 1):
            if (variant, seed) in rows:
                continue
            name, run_dir = run_name(variant, seed), runs_root / run_name(variant, seed)
            needs_predictions = predictions and configs[(variant, seed)].recipe == "classification"
            row = _finished_row(run_dir, needs_predictions=needs_predictions, spectrum_point=spectrum_point)
            lock = None if row is not None else claim(out / CLAIMS, name)
            if row is None and lock is None:
                if (variant, seed) not in held:
                    held.add((variant, seed))
                    log(f"[{i}/{len(jobs)}] {variant} seed {seed} is being run by {holder(out / CLAIMS, name)}; "
                        "doing the other runs first, then waiting for it")
                continue
            try:
                if row is None:  # claimed: it may have finished between the look and the claim
                    row = _finished_row(run_dir, needs_predictions=needs_predictions, spectrum_point=spectrum_point)
                done = row is not None
                remaining = sum(1 for job in jobs if job not in rows and job != (variant, seed))
                eta = f"ETA {clock(trained_time / trained * (remaining + (not done)))}" if trained else "ETA –"
                log(f"[{i}/{len(jobs)}] {variant} seed {seed} {'done, skipped' if done else '…'} "
                    f"(elapsed {clock(time.monotonic() - start)}, {eta})")
                if row is None:
                    t0 = time.monotonic()
                    row = _run_unit(config_path, configs[(variant, seed)], overrides, variant, seed, run_dir,
                                    previous=previous.get(str(run_dir), {}), predictions=predictions,
                                    spectrum_point=spectrum_point)
                    trained_time, trained = trained_time + time.monotonic() - t0, trained + 1
            finally:
                if lock is not None:
                    lock.release()
            rows[(variant, seed)], progressed = row, True
            atomic_write_text(out / "results.jsonl", "".join(json.dumps(rows[j], sort_keys=True) + "\n"
                                                             for j in jobs if j in rows))
        if not progressed:
            _wait(poll_s)
    ordered = [rows[j] for j in jobs]
    plots = _plots(ordered, out)
    report = out / "report.md"
    atomic_write_text(report, render_report(ordered, command=command, baseline="none" if "none" in variants
                                            else variants[0], plots=plots))
    log(f"compare: {len(jobs)} runs in {clock(time.monotonic() - start)}; report {report}")
    return report


def _plots(rows: list[dict[str, Any]], out: Path) -> dict[str, list[str]]:
    """Draw every plot the rows allow; returns ``{recipe: [file names]}`` for the report."""
    drawn: dict[str, list[str]] = {}
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == recipe]
        names = drawn.setdefault(recipe, [])
        if plot_validation_curves(mine, out / f"{recipe}_val_curves.png", title=f"{recipe}: validation") is not None:
            names.append(f"{recipe}_val_curves.png")
        keys = sorted({k for r in mine for k in r["metrics"]})
        if recipe == "segmentation":
            bars = [k for k in keys if k.startswith("test/dice_")]
            if bars and plot_metric_bars(mine, bars, out / "segmentation_dice.png", title="Dice per class"):
                names.append("segmentation_dice.png")
        if recipe == "handwriting":
            bars = [k for k in ("test/cer", "test/wer") if k in keys]
            if bars and plot_metric_bars(mine, bars, out / "handwriting_cer.png", title="CER / WER"):
                names.append("handwriting_cer.png")
        if recipe == "classification":
            curves: dict[str, dict[str, Any]] = {}
            flagged: list[str] = []
            for variant in dict.fromkeys(r["variant"] for r in mine):  # every seed of each variant, pooled
                runs = []
                for r in (r for r in mine if r["variant"] == variant):
                    path = Path(r["run_dir"]) / "predictions.csv"
                    if path.is_file():
                        probs, target = read_predictions(path)
                        if len(target):
                            runs.append((int(r["seed"]), probs, target, r.get("temperature")))
                            if temperature_flag(r):
                                flagged.append(f"{variant} seed {r['seed']}")
                if runs:
                    curves[variant] = pooled_reliability(runs)
            if curves:
                seeds = sorted({int(r["seed"]) for r in mine})
                note = "bins: equal-width where every bin can hold 25 predictions, else equal-mass"
                notes = {"raw": note, "scaled": note + (f"\n⚠ T fell back to 1 or sits at a bound: {', '.join(flagged)}"
                                                        if flagged else "")}
                plot_pooled_reliability(curves, out / "classification_reliability.png",
                                        title=f"seeds {', '.join(map(str, seeds))} pooled", notes=notes)
                names.append("classification_reliability.png")
            spectra = {}
            for r in mine:  # the first seed of each variant
                path = (r.get("extra") or {}).get("spectrum_file")
                if path and r["variant"] not in spectra and Path(path).is_file():
                    spectra[r["variant"]] = ClassSpectra.from_dict(json.loads(Path(path).read_text()))
            if spectra:
                plot_spectra(spectra, out / "classification_spectra.png", title="class-conditional spectra")
                names.append("classification_spectra.png")
    return drawn
