"""What a person reads after a run: the fit summary (best and last validation metrics) and the test table.

``fit`` writes ``run_dir/fit_summary.json`` (the validation metrics of the last epoch and of the
best checkpoint by ``train.monitor``, the checkpoint paths and the temperature); the CLI prints
it with :func:`format_fit_summary`. ``test`` prints :func:`format_test_table`: one row per metric,
the raw figure beside the temperature-scaled one, and a note where a number needs its reading
(the ECE's direction, which side OOD figures call positive, HD95's unit, a temperature that fell
back to 1). ``predict`` prints :func:`format_prediction_line`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from mmix_applied.reports.classes import class_report, metric_key, write_class_report
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["FIT_SUMMARY_FILE", "ClassReport", "ValidationHistory", "format_fit_summary", "format_prediction_line",
           "format_test_table", "write_fit_summary"]

FIT_SUMMARY_FILE = "fit_summary.json"


class ValidationHistory(pl.Callback):
    """Keeps the logged ``val/*`` metrics of every validation epoch (``history[epoch] = {...}``)."""

    def __init__(self) -> None:
        self.history: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record this epoch's validation metrics (after the module's epoch-end logging)."""
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}
        if values:
            self.history[int(trainer.current_epoch)] = values


class ClassReport(pl.Callback):
    """After ``test``: per-class precision and recall as ``test/precision_<class>``, ``test/recall_<class>``;
    :meth:`write` puts ``confusion_matrix.json`` / ``.png`` into the run directory.

    Reads the ``confusion`` entry (a torchmetrics ``MulticlassConfusionMatrix``) of the module's test
    metrics before the module computes and resets them (Lightning calls callbacks first). The
    files are written by ``engine.runner.test`` after the metrics are printed and saved, so a
    folder that cannot be written loses nothing.

    Args:
        class_names: The class names, in index order.
    """

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)
        self.matrix: Any = None

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the confusion matrix and log the per-class figures."""
        metrics = getattr(pl_module, "test_metrics", None)
        if metrics is None or "confusion" not in metrics:
            return
        self.matrix = metrics["confusion"].compute().cpu()
        report = class_report(self.matrix, self.class_names)
        for i, name in enumerate(self.class_names):
            for kind in ("precision", "recall"):
                pl_module.log(f"test/{kind}_{metric_key(name)}", float(report[kind][i]))

    def write(self, run_dir: Path) -> dict[str, Any] | None:
        """Write the report of the last test into ``run_dir`` (``None`` when no test ran)."""
        if self.matrix is None:
            return None
        return write_class_report(self.matrix, self.class_names, run_dir)


def _best(trainer: pl.Trainer) -> tuple[str | None, float | None]:
    """Path and score of the best checkpoint by the monitor (``None`` when none is kept)."""
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) and getattr(cb, "best_model_path", ""):
            score = cb.best_model_score
            return cb.best_model_path, None if score is None else float(score)
    return None, None


def write_fit_summary(run_dir: Path, trainer: pl.Trainer, history: ValidationHistory, *,
                      monitor: str, calibration: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``run_dir/fit_summary.json`` and return it."""
    best_path, best_score = _best(trainer)
    last_epoch = max(history.history) if history.history else None
    best_epoch = None
    if best_score is not None:
        close = [e for e, v in history.history.items() if monitor in v and math.isclose(v[monitor], best_score,
                                                                                        rel_tol=1e-6, abs_tol=1e-9)]
        best_epoch = close[0] if close else None
    last_ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    summary = {
        "run_dir": str(run_dir),
        "epochs": int(trainer.current_epoch),
        "monitor": monitor,
        "last": {"epoch": last_epoch, "metrics": history.history.get(last_epoch, {}) if last_epoch is not None
                 else {}, "checkpoint": str(last_ckpt.resolve()) if last_ckpt.is_file() else None},
        "best": {"epoch": best_epoch, "score": best_score, "checkpoint": best_path,
                 "metrics": history.history.get(best_epoch, {}) if best_epoch is not None else {}},
        "temperature": calibration.get("temperature"),
        "temperature_note": (calibration.get("notes") or {}).get("last.ckpt"),
        "temperatures": dict(calibration.get("checkpoints") or {}),
        "calibration_note": calibration.get("reason"),
        "calibration_warnings": list(calibration.get("warnings") or []),
    }
    atomic_write_text(Path(run_dir) / FIT_SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def format_fit_summary(summary: Mapping[str, Any]) -> str:
    """The fit summary as a few lines: best and last validation metrics, checkpoints, temperature."""
    lines = [f"run directory: {summary['run_dir']}"]
    best, last = summary.get("best") or {}, summary.get("last") or {}
    keys = sorted({*best.get("metrics", {}), *last.get("metrics", {})})
    if keys:
        lines.append(f"{'validation':<22} {'best':>10} {'last':>10}")
        lines.append(f"{'epoch':<22} {_num(best.get('epoch')):>10} {_num(last.get('epoch')):>10}")
        for key in keys:
            lines.append(f"{key:<22} {_num(best.get('metrics', {}).get(key)):>10} "
                         f"{_num(last.get('metrics', {}).get(key)):>10}")
    else:
        lines.append("no validation ran (train.limit_val_batches=0)")
    if best.get("checkpoint"):
        lines.append(f"best checkpoint ({summary.get('monitor')} = {_num(best.get('score'))}): {best['checkpoint']}")
    if last.get("checkpoint"):
        lines.append(f"last checkpoint: {last['checkpoint']}")
    if summary.get("temperature") is not None and summary.get("temperature_note"):
        lines.append(f"temperature: {summary['temperature']:.4g} ({summary['temperature_note']})")
    elif summary.get("temperature") is not None:
        lines.append(f"temperature (fitted on the validation split): {summary['temperature']:.4g}")
    elif summary.get("calibration_note"):
        lines.append(f"no temperature: {summary['calibration_note']}")
    lines += [f"warning: {w}" for w in summary.get("calibration_warnings") or []]
    return "\n".join(lines)


_NOTES = {  # what a row's number means, where it is not obvious from its name
    "conf_gap": "mean confidence - accuracy: > 0 overconfident, < 0 underconfident",
    "ood_auroc": "in-distribution = positive (scored by max softmax), OOD = negative",
    "ood_fpr95": "share of OOD images scored above the threshold keeping 95 % of in-distribution (positive)",
}
_TEXT_KEYS = ("temperature", "temperature_note", "hd95_unit")


def _direction(gap: Any) -> str | None:
    if not isinstance(gap, (int, float)) or isinstance(gap, bool) or math.isnan(gap):
        return None
    return "overconfident" if gap > 0 else "underconfident" if gap < 0 else "calibrated"


def _note(name: str, metrics: Mapping[str, Any]) -> str:
    prefix, _, short = name.rpartition("/")
    prefix = f"{prefix}/" if prefix else ""
    if short in ("ece", "adaptive_ece"):
        raw, scaled = (_direction(metrics.get(f"{prefix}conf_gap{s}")) for s in ("", "_scaled"))
        words = [f"{w}{' (scaled)' if s else ''}" for w, s in ((raw, ""), (scaled, "_scaled")) if w]
        return f"direction: {', '.join(words)}" if words else ""
    if short.startswith("hd95_") or short == "mean_hd95":
        return f"in {metrics['hd95_unit']}" if metrics.get("hd95_unit") else ""
    return _NOTES.get(short, "")


def format_test_table(metrics: Mapping[str, Any]) -> str:
    """Test metrics as a table: ``metric | raw | scaled | note`` (scaled: logits divided by the temperature).

    The note gives the ECE's direction (from ``conf_gap``: mean confidence - accuracy), which side
    the OOD figures treat as positive (in-distribution), and HD95's unit; the temperature line says
    when T = 1 was kept because the fit was degenerate (``temperature_note``).
    """
    names = sorted(k for k in metrics if not k.endswith("_scaled") and k not in _TEXT_KEYS)
    width = max([len(n) for n in names] + [6])
    lines = [f"{'metric':<{width}}  {'raw':>10}  {'scaled':>10}  note", f"{'-' * width}  {'-' * 10}  {'-' * 10}  ----"]
    for name in names:
        scaled = metrics.get(f"{name}_scaled")
        row = f"{name:<{width}}  {_num(metrics[name]):>10}  {_num(scaled) if scaled is not None else '':>10}"
        note = _note(name, metrics)
        lines.append(f"{row}  {note}" if note else row)
    t, note = metrics.get("temperature"), metrics.get("temperature_note")
    if t is not None and note:
        lines.append(f"temperature: {t:.4g}, {note}; scaled = raw")
    else:
        lines.append(f"temperature: {t:.4g} (scaled = logits / T)" if t is not None
                     else "temperature: none (raw figures only)")
    return "\n".join(lines)


def format_prediction_line(path: Path, *, raw: bool) -> str:
    """What ``predict`` wrote; the ``temperature`` column is named only where the file has one."""
    has_column = False
    if Path(path).suffix.lower() == ".csv" and Path(path).is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            has_column = "temperature" in next(csv.reader(fh), [])
    if not has_column:
        return f"predictions: {path}"
    how = "raw" if raw else "calibrated where the checkpoint has a temperature"
    return f"predictions: {path} ({how}; see its temperature column)"
