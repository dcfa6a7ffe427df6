"""Run-directory safety: one run per directory, prediction outputs that never replace a checkpoint,
and write failures (read-only folder, full disk) reported with the path and the cause.

* :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``run_dir/.lock`` (the file holds the
  owner's PID). The kernel drops the lock when its process ends, so a lock file left by a killed
  run is simply taken over; a second live run into the same directory fails at once naming the
  first one's PID.
* :func:`prediction_output` decides where ``predict`` may write: a folder means
  ``folder/predictions.csv``; an existing file is replaced only if it is a previous prediction of
  ours (recognised by its first line) or ``overwrite=True``; a checkpoint is never replaced.
* :class:`RunWriteError` is the one error for a file the run could not write.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from mmix_applied.errors import MmixError

__all__ = ["PREDICTION_HEADERS", "RunLock", "RunLockedError", "RunWriteError", "is_checkpoint_file",
           "prediction_output", "write_error"]

# First-line prefixes of the tables our recipes' ``write_predictions`` produce.
PREDICTION_HEADERS = ("id,target,predicted,confidence", "name,mask", "# mmix-applied predictions")


class RunLockedError(MmixError, FileExistsError):
    """Another live process holds the run directory's lock."""


class RunWriteError(MmixError, OSError):
    """A file of the run could not be written (the message names the path, the cause and the fix).

    Attributes:
        path: The file that could not be written.
        metrics: Results computed before the failed write (e.g. ``test``'s metrics), so the caller
            can still show them; empty when there are none.
    """

    def __init__(self, message: str, *, path: Path, metrics: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.metrics = dict(metrics or {})

    def __str__(self) -> str:
        return str(self.args[0])


class RunLock:
    """An exclusive lock on a run directory (``run_dir/.lock``), released on :meth:`release` or exit.

    Args:
        run_dir: The run directory (created if missing).

    Raises:
        RunLockedError: Another live process holds the lock (the message names its PID).
        RunWriteError: The lock file cannot be created (read-only or full disk).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(err, self.path) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise RunLockedError(
                f"run directory {str(self.path.parent)!r} is in use by another run (PID {owner}, lock "
                f"{str(self.path)!r}); wait for it to finish, or choose another run.name"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        """Drop the lock (idempotent); the lock file stays, empty of meaning once unlocked."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - a lock dropped without release()
        try:
            self.release()
        except Exception:
            pass


def is_checkpoint_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is (or is named as) a checkpoint: a ``.ckpt``/``.pt``/``.pth`` name or a torch zip."""
    path = Path(path)
    if path.suffix.lower() in (".ckpt", ".pt", ".pth"):
        return True
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_our_prediction(path: Path) -> bool:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return False
    return first.startswith(PREDICTION_HEADERS)


def prediction_output(output: str | os.PathLike | None, *, run_dir: Path, overwrite: bool = False) -> Path:
    """Where ``predict`` writes: checked before anything is computed.

    Args:
        output: ``--output`` (a file or a folder), or ``None`` for ``run_dir/predictions.csv``.
        run_dir: The checkpoint's run directory.
        overwrite: Replace an existing file that is not a previous prediction of ours.

    Returns:
        The file to write.

    Raises:
        FileExistsError: The file exists and is a checkpoint (never replaced), or is not a
            prediction of ours and ``overwrite`` is off.
    """
    path = run_dir / "predictions.csv" if output is None else Path(output)
    if path.is_dir():
        path = path / "predictions.csv"
    if is_checkpoint_file(path) and (path.exists() or path.suffix.lower() == ".ckpt"):
        raise FileExistsError(
            f"--output {str(path)!r} is a checkpoint; predictions never replace a checkpoint (not even with "
            "--overwrite). Pass another file, e.g. --output predictions.csv"
        )
    if path.exists() and not overwrite and not _is_our_prediction(path):
        raise FileExistsError(
            f"--output {str(path)!r} exists and is not a previous prediction of mmix-applied (its first line is not "
            f"one of {list(PREDICTION_HEADERS)}); pass another file, or --overwrite to replace it"
        )
    return path


def write_error(err: BaseException, path: str | os.PathLike, *, metrics: dict[str, float] | None = None,
                kept: str | None = None) -> RunWriteError:
    """A :class:`RunWriteError` for ``err`` raised while writing ``path``: names the path, the cause and the fix.

    Args:
        err: The ``OSError`` (or torch's writer ``RuntimeError``) of the failed write.
        path: The file being written.
        metrics: Results computed before the write, kept on the error for the caller to show.
        kept: What was left intact (e.g. the previous checkpoint), said in the message.
    """
    path = Path(path)
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC:
        fix = "free some space or set run.dir to another disk"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make the folder writable or set run.dir (or --output) to a writable folder"
    else:
        fix = "check the folder and the disk (a full disk fails this way), or set run.dir to another folder"
    if code:
        cause = f"[Errno {code}] {os.strerror(code)}"
    else:
        cause = f"the writer failed ({' '.join(str(err).split())})"
    free = _free_bytes(path)
    disk = f"; {free / 2**20:.1f} MiB free there" if free is not None and code in (errno.ENOSPC, None) else ""
    keep = f"; {kept}" if kept else ""
    return RunWriteError(f"cannot write {str(path)!r}: {cause}{disk}{keep}; {fix}", path=path, metrics=metrics)


def _free_bytes(path: Path) -> int | None:
    for folder in (path.parent, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None
