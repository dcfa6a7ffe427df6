"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed.

A kill during a write leaves the previous file intact (POSIX ``rename`` is atomic), and a crash
right after it cannot leave a renamed but empty file (the data reached the disk before the
rename). The one implementation every writer of the project uses: config files, checkpoints,
predictions, the demo's figures and the per-rank summaries. Lightning-free, so drawing a plot
or saving a config loads no training engine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
