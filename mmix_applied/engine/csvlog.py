"""The CSV log of a run (``logs/metrics.csv``), kept across ``fit --resume``.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts (with a warning the
CLI hides), so a resumed run kept only the rows logged after the resume. :class:`HistoryCSVLogger`
is that logger, with three changes:

* on resume (:meth:`HistoryCSVLogger.resume_at`) the rows already in the file are kept, those
  logged before the checkpoint's global step; rows logged from that step on belong to the part of
  the run the kill lost, which the resumed run logs again, so they are dropped instead of
  appearing twice (a resumed run's log equals an uninterrupted run's);
* the rows logged so far are written out whenever a checkpoint is saved (Lightning writes them
  every 100 steps), so a killed run's log reaches its last checkpoint;
* a rewrite of the file (when a new column appears) is atomic, and a stop requested by Ctrl-C or
  SIGTERM waits until rows being appended are written.

A new run (no resume) starts a new file, as Lightning's does.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mmix_applied.utils.atomic import atomic_write_text
from mmix_applied.utils.interrupts import deferred

__all__ = ["HistoryCSVLogger"]


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


def _write_rows(path: str, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping the rows of ``metrics.csv`` up to ``keep_until_step`` (None: a new file)."""

    def __init__(self, log_dir: str, keep_until_step: int | None) -> None:
        self._keep_until_step = keep_until_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._keep_until_step is None:
            super()._check_log_dir_exists()
            return
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or [])
        # Lightning logs a step's metrics under the global step before it (an epoch's validation under its
        # last training step), so the rows of the checkpoint's part of the run are those below its global step
        kept = [row for row in rows if not _step(row) >= self._keep_until_step]  # NaN (no step): kept
        if len(kept) != len(rows):
            _write_rows(self.metrics_file_path, header, kept)
        self.metrics_keys = sorted(header)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        _write_rows(self.metrics_file_path, fieldnames, rows)

    def save(self) -> None:
        with deferred():
            super().save()


class HistoryCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that keeps a resumed run's earlier rows (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_until_step: int | None = None

    def resume_at(self, step: int) -> None:
        """Keep the rows already logged before global step ``step`` (the resumed checkpoint's); call before fit."""
        self._keep_until_step = int(step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer (created on first use, as Lightning's)."""
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _HistoryWriter(log_dir=self.log_dir, keep_until_step=self._keep_until_step)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Write the rows logged so far, so the log on disk reaches the checkpoint just saved."""
        if self._experiment is not None:
            self.save()
