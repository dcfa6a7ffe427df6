"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed.

A kill during a write leaves the previous file intact (POSIX ``rename`` is atomic), and a crash
right after it cannot leave a renamed but empty file (the data reached the disk before the
rename). The one implementation every writer of the project uses: config files, checkpoints,
predictions, the demo's figures and the per-rank summaries. Lightning-free, so drawing a plot
or saving a config loads no training engine.

The file gets the permissions a plain ``open(path, "w")`` would give it: those of the file it
replaces, else ``0o666`` less the process's umask (``mkstemp`` alone makes every file ``0o600``,
so colleagues could not read a shared run). A stop requested by Ctrl-C or SIGTERM under the
command line waits until the file is renamed (:func:`mmix_applied.utils.interrupts.deferred`).
When a write fails, the free space of its folder is measured before the temporary file is removed
and kept on the error as ``free_bytes_at_failure`` (a full disk shows 0 there, not the space the
removal gave back).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mmix_applied.utils.interrupts import deferred

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "current_umask"]

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # elsewhere: set and put back at once (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    Args:
        path: The file to (re)place; missing parent folders are created.
        write: Writes the content to the binary file handle it is given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), _mode_for(path))
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            _note_free_space(err, path.parent)
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def _note_free_space(err: BaseException, folder: Path) -> None:
    if isinstance(err, (OSError, RuntimeError)) and not hasattr(err, "free_bytes_at_failure"):
        try:
            err.free_bytes_at_failure = shutil.disk_usage(folder).free  # type: ignore[attr-defined]
        except (OSError, AttributeError):
            pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
