"""Units of work shared by several processes: claimed through a lock, never done twice.

``compare`` (one unit per variant x seed) and ``tune`` (one per trial setting x seed) run their
units through these primitives, so several processes -- one per GPU, one per SLURM job, on one
machine or on several that share the output folder -- can work on one comparison or one study:

* :func:`claim` takes :class:`~mmix_applied.engine.rundir.RunLock` on ``claims_dir/<unit>`` and
  writes who holds it (PID, host, since when) beside it. The kernel drops the lock when its
  process ends (on NFS, when the client's lease ends), so a killed process's unit is taken over by
  the next one, while a live holder is named to whoever finds the unit taken.
* :func:`fit_finished` says whether a run's ``fit`` ended (its summary is the last file ``fit``
  writes): a finished fit is never redone, a killed one resumes from ``last.ckpt``.
* :func:`config_changes` lists the keys whose values differ between a finished run's saved config
  and the config a new invocation would give it, so results are never reported under a command
  that did not produce them.
* :func:`check_writable` fails before any work when an output folder cannot be written.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from mmix_applied.engine.config import Config, config_to_dict, read_yaml
from mmix_applied.engine.rundir import RunLock, RunLockedError, RunWriteError
from mmix_applied.engine.summary import FIT_SUMMARY_FILE
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["HOLDER_FILE", "check_writable", "claim", "config_changes", "fit_finished", "holder", "flat"]

HOLDER_FILE = "holder.json"


def claim(claims_dir: str | os.PathLike, name: str) -> RunLock | None:
    """Claim unit ``name``: the held lock, or ``None`` when a live process holds it (see :func:`holder`).

    Release the returned lock (``with`` or :meth:`~mmix_applied.engine.rundir.RunLock.release`) when the
    unit's work is done or has failed; a process that dies releases it by dying.

    Raises:
        RunWriteError: ``claims_dir`` cannot be written.
    """
    folder = Path(claims_dir) / name
    try:
        lock = RunLock(folder)
    except RunLockedError:
        return None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(folder / HOLDER_FILE, json.dumps(record))
    return lock


def holder(claims_dir: str | os.PathLike, name: str) -> str:
    """Who holds unit ``name``, in words: ``"PID 123 on host-a (since 2026-12-04 10:00:00)"``."""
    folder = Path(claims_dir) / name
    try:
        record = json.loads((folder / HOLDER_FILE).read_text())
        return f"PID {record['pid']} on {record['host']} (since {record['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return f"PID {(folder / '.lock').read_text().strip() or 'unknown'}"
        except OSError:
            return "an unknown process"


def fit_finished(run_dir: str | os.PathLike) -> bool:
    """Whether the run's ``fit`` ended: its ``fit_summary.json`` is the last file ``fit`` writes."""
    return (Path(run_dir) / FIT_SUMMARY_FILE).is_file()


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"mix.alpha": 0.2, ...}``: a nested mapping flattened to dotted keys (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flat(value, name))
        else:
            out[name] = value
    return out


def config_changes(run_dir: str | os.PathLike, config: Config, *, ignore: tuple[str, ...] = ("run.",)) -> list[str]:
    """``["data.labels_per_class: 2 -> 3", ...]``: keys whose value in ``run_dir/config.yaml`` differs from ``config``.

    Keys starting with one of ``ignore`` (default the ``run`` section: where the run lives) are left
    out, and so is a key ``config`` leaves at ``auto`` (``train.precision``, ``train.channels_last``: the
    run saved what ``auto`` meant on its machine). An empty list when the run has no saved config.
    """
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        return []
    saved, new = flat(read_yaml(saved_path)), flat(config_to_dict(config))
    changes = []
    for key in sorted(set(saved) | set(new)):
        if key.startswith(ignore) or new.get(key) == "auto" or saved.get(key, "<unset>") == new.get(key, "<unset>"):
            continue
        changes.append(f"{key}: {saved.get(key, '<unset>')!r} -> {new.get(key, '<unset>')!r}")
    return changes


def check_writable(folder: str | os.PathLike, *, flag: str) -> Path:
    """Create ``folder`` if needed and check a file can be written in it (the check file is removed).

    Raises:
        RunWriteError: The folder cannot be created or written; the message names ``flag`` as the fix.
    """
    folder = Path(folder)
    probe = folder / f".write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(probe, "")
        probe.unlink()
    except OSError as err:
        cause = f"[Errno {err.errno}] {os.strerror(err.errno)}" if err.errno else str(err)
        raise RunWriteError(f"cannot write into {flag} {str(folder)!r}: {cause}; pass a writable folder as {flag}",
                            path=folder) from err
    return folder
