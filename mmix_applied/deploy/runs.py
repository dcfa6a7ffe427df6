"""Which checkpoint of a run: ``RUN``, ``RUN:best``, ``RUN:last`` or a file, said in one line.

A run directory holds ``checkpoints/last.ckpt`` (every epoch end) and the best ``save_top_k``
checkpoints by ``train.monitor`` (``epochNNN.ckpt``), the best one named in ``fit_summary.json``.
:func:`resolve_run_checkpoint` turns what a user typed into one file and a note saying which it
is and why; ``fit --resume`` asks for ``last`` by default, ``test``, ``predict``, ``spectrum``,
``export`` and :func:`mmix_applied.load_run` for ``best`` (the one ``fit`` announces), falling
back to ``last.ckpt`` when no best one is recorded. The best checkpoint is found by its file name
inside the run's own ``checkpoints/`` folder, so a run directory that was moved or copied still
resolves.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

__all__ = ["CHOICES", "FIT_SUMMARY_FILE", "RunCheckpoint", "resolve_run_checkpoint", "run_dir_of_checkpoint"]

#: The suffixes ``RUN:<which>`` accepts.
CHOICES = ("best", "last")
#: Written by ``fit`` (:mod:`mmix_applied.engine.summary`): the best checkpoint by ``train.monitor``.
FIT_SUMMARY_FILE = "fit_summary.json"

Which = Literal["best", "last"]


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a run and why it was chosen.

    Attributes:
        path: The ``.ckpt`` file.
        run_dir: Its run directory (``path``'s folder, or the folder above ``checkpoints/``).
        which: ``"best"``, ``"last"`` or ``"file"`` (a file named directly).
        note: Why this file (e.g. ``"best by val/loss = 0.41 at epoch 3"``).
    """

    path: Path
    run_dir: Path
    which: str
    note: str

    def describe(self) -> str:
        """``"checkpoint: PATH (note)"``, the one line ``test``/``predict``/``export`` print."""
        return f"checkpoint: {self.path} ({self.note})"


def run_dir_of_checkpoint(path: str | os.PathLike) -> Path:
    """The run directory of a checkpoint file: the folder above ``checkpoints/``, else its own folder."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _split(spec: str | os.PathLike) -> tuple[Path, Which | None]:
    """``RUN:best`` -> ``(RUN, "best")``; a path that exists as typed is never split."""
    text = os.fspath(spec)
    if Path(text).exists() or ":" not in text:
        return Path(text), None
    base, _, which = text.rpartition(":")
    if which in CHOICES:
        return Path(base), which  # type: ignore[return-value]
    if Path(base).is_dir():
        raise ValueError(f"checkpoint {text!r}: unknown suffix {':' + which!r}; valid: "
                         f"{', '.join(f'RUN:{c}' for c in CHOICES)}, a run directory, or a .ckpt file")
    return Path(text), None


def _best(run_dir: Path) -> tuple[Path | None, str]:
    """The best checkpoint recorded in ``fit_summary.json`` (found in this run's ``checkpoints/``) and a note."""
    summary_file = run_dir / FIT_SUMMARY_FILE
    if not summary_file.is_file():
        return None, f"no {FIT_SUMMARY_FILE} (the fit did not finish)"
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"{FIT_SUMMARY_FILE} cannot be read ({type(err).__name__})"
    best = summary.get("best") or {} if isinstance(summary, dict) else {}
    recorded = best.get("checkpoint")
    if not recorded:
        return None, "no best checkpoint recorded (no validation, or train.save_top_k=0)"
    name = Path(str(recorded)).name
    path = run_dir / "checkpoints" / name
    if not path.is_file():
        return None, f"the recorded best checkpoint {name} is missing from {run_dir / 'checkpoints'}"
    score, epoch = best.get("score"), best.get("epoch")
    monitor = summary.get("monitor") or "the monitor"
    detail = f"best by {monitor}" + (f" = {score:.4g}" if isinstance(score, (int, float)) else "")
    return path, detail + (f" at epoch {epoch}" if epoch is not None else "")


def resolve_run_checkpoint(spec: str | os.PathLike, *, default: Which = "best") -> RunCheckpoint:
    """The checkpoint ``spec`` names: ``RUN``, ``RUN:best``, ``RUN:last`` or a ``.ckpt`` file.

    Args:
        spec: A run directory (optionally with ``:best`` / ``:last``) or a checkpoint file.
        default: What a bare run directory means: ``"best"`` (falls back to ``last.ckpt`` when no
            best checkpoint is recorded; the note says so) or ``"last"``.

    Raises:
        FileNotFoundError: Nothing exists at ``spec``, or the run has no checkpoint of that kind.
        ValueError: An unknown ``:suffix`` after an existing run directory.
    """
    path, which = _split(spec)
    if path.is_file():
        if which is not None:
            raise ValueError(f"checkpoint {os.fspath(spec)!r}: ':{which}' applies to a run directory, and "
                             f"{str(path)!r} is a file; pass the file alone, or its run directory with :{which}")
        return RunCheckpoint(path, run_dir_of_checkpoint(path), "file", "the file given")
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {os.fspath(spec)!r} does not exist (give a run directory, "
                                f"RUN:best, RUN:last or a .ckpt file)")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    last = folder / "last.ckpt"
    if not any(folder.glob("*.ckpt")):
        raise FileNotFoundError(f"run directory {str(path)!r} has no checkpoints ({str(folder)}/*.ckpt): train it "
                                "first (mmix-applied fit), or pass a .ckpt file")
    wanted = which or default
    if wanted == "best":
        best, why = _best(path)
        if best is not None:
            return RunCheckpoint(best, path, "best", why + ("" if which else "; RUN:last for the last epoch's"))
        if which == "best":
            raise FileNotFoundError(f"run directory {str(path)!r} has no best checkpoint: {why}; use "
                                    f"{str(path)}:last")
        if last.is_file():
            return RunCheckpoint(last, path, "last", f"last epoch; {why}")
    elif last.is_file():
        return RunCheckpoint(last, path, "last", "last epoch" + ("" if which else "; RUN:best for the best one"))
    raise FileNotFoundError(f"run directory {str(path)!r} has no checkpoints/last.ckpt (found "
                            f"{sorted(p.name for p in folder.glob('*.ckpt'))}); pass one of them as a file")
