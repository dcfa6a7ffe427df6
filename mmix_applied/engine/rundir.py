"""Run-directory safety: one run per directory, prediction outputs that never replace a checkpoint,
and write failures (read-only folder, full disk) reported with the path and the cause.

* :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``run_dir/.lock`` (the file holds the
  owner's PID; it is opened without following a link, and must be a regular file with one name).
  The kernel drops the lock when its process ends, so a lock file left by a killed run is simply
  taken over; a second live run into the same directory fails at once naming the first one's PID.
* :func:`prediction_output` decides where ``predict`` may write: a folder (or a new name without
  a suffix) means ``folder/predictions.csv``; an existing file is replaced only if it is a previous
  prediction of ours (recognised by its first line) or ``overwrite=True``; a checkpoint or an
  input is never replaced.
* :func:`check_output_folder` keeps files a recipe writes beside its table (segmentation masks)
  out of a folder holding files no earlier prediction wrote (the user's images).
* :func:`check_run_name` keeps a run inside ``run.dir`` (no absolute name, no ``..``).
* :class:`RunWriteError` is the one error for a file the run could not write; :func:`write_error`
  names a full disk as such (with the space free when the write failed) and a folder that was
  deleted while the run wrote to it.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePath
from typing import Any

from mmix_applied.errors import ConfigError, MmixError

__all__ = ["PREDICTION_HEADERS", "RunLock", "RunLockedError", "RunWriteError", "check_output_folder", "check_run_name",
           "is_checkpoint_file", "prediction_output", "write_error"]

# First-line prefixes of the tables our recipes' ``write_predictions`` produce.
PREDICTION_HEADERS = ("id,target,predicted,confidence", "name,mask", "path,text", "# mmix-applied predictions")


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


def _not_a_lock(path: Path, what: str) -> FileExistsError:
    return FileExistsError(
        f"run lock {str(path)!r} is {what}; mmix-applied writes its lock only as a regular file, so something else "
        "put it there. Nothing was written; remove it (after checking what it is) or choose another run.name"
    )


class RunLock:
    """An exclusive lock on a run directory (``run_dir/.lock``), released on :meth:`release` or exit.

    Args:
        run_dir: The run directory (created if missing).

    Raises:
        RunLockedError: Another live process holds the lock (the message names its PID).
        FileExistsError: ``.lock`` is a symbolic link, a hard link or not a regular file (nothing is written).
        RunWriteError: The lock file cannot be created or the PID written (read-only or full disk).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlink planted as .lock must not make the run truncate the file it points to
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _not_a_lock(self.path, "a symbolic link") from None
            raise write_error(err, self.path) from err
        found = os.fstat(self._fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink > 1:  # a FIFO, a device (O_NONBLOCK: no hang), a hard link
            os.close(self._fd)
            self._fd = None
            raise _not_a_lock(self.path, "not a regular file" if not stat.S_ISREG(found.st_mode)
                              else f"a hard link ({found.st_nlink} names for one file)")
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
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as err:  # a full disk: the PID cannot be written
            self.release()
            raise write_error(err, self.path) from err

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


def prediction_output(output: str | os.PathLike | None, *, run_dir: Path, overwrite: bool = False,
                      inputs: str | os.PathLike | None = None) -> Path:
    """Where ``predict`` writes: checked before anything is computed.

    Args:
        output: ``--output``: a file, or a folder (an existing one, a name ending in ``/``, or a new
            name without a suffix such as ``preds``) for ``folder/predictions.csv``; ``None`` for
            ``run_dir/predictions.csv``.
        run_dir: The checkpoint's run directory.
        overwrite: Replace an existing file that is not a previous prediction of ours.
        inputs: ``--input`` (a file or a folder): never written over, not even with ``overwrite``.

    Returns:
        The file to write.

    Raises:
        FileExistsError: The file exists and is a checkpoint or an input (never replaced), or is
            not a prediction of ours and ``overwrite`` is off.
    """
    path = run_dir / "predictions.csv" if output is None else Path(output)
    new_folder = output is not None and not path.exists() and (str(output).endswith(("/", os.sep)) or not path.suffix)
    if path.is_dir() or new_folder:
        path = path / "predictions.csv"
    if is_checkpoint_file(path) and (path.exists() or path.suffix.lower() == ".ckpt"):
        raise FileExistsError(
            f"--output {str(path)!r} is a checkpoint; predictions never replace a checkpoint (not even with "
            "--overwrite). Pass another file, e.g. --output predictions.csv"
        )
    if inputs is not None and path.exists() and _is_within(path, Path(inputs)):
        what = "the --input file" if Path(inputs).is_file() else "a file in the --input folder"
        raise FileExistsError(
            f"--output {str(path)!r} is {what} {str(inputs)!r}; predictions never replace an input (not even with "
            "--overwrite). Pass another file, e.g. --output predictions.csv"
        )
    if path.exists() and not overwrite and not _is_our_prediction(path):
        raise FileExistsError(
            f"--output {str(path)!r} exists and is not a previous prediction of mmix-applied (its first line is not "
            f"one of {list(PREDICTION_HEADERS)}); pass another file, or --overwrite to replace it"
        )
    return path


def _is_within(path: Path, where: Path) -> bool:
    """Whether the existing file ``path`` is ``where`` (a file) or inside it (a folder)."""
    try:
        if where.is_file():
            return path.samefile(where)
        return where.is_dir() and path.resolve().is_relative_to(where.resolve())
    except OSError:
        return False


def check_output_folder(folder: str | os.PathLike, *, table: str | os.PathLike) -> None:
    """Refuse to write predicted files (masks) into ``folder`` if it holds files that ``table`` does not list.

    ``table`` is the prediction table written beside the folder (``name,mask`` rows, masks relative
    to its folder); files an earlier prediction listed there (``<name>*``) may be replaced. Any other
    file may be the user's data (``--output data/x/img.csv`` puts its masks in ``data/x/img/``), so
    nothing is written.

    Raises:
        FileExistsError: ``folder`` is a file, or holds a file no earlier prediction listed.
    """
    folder, table = Path(folder), Path(table)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"predicted masks go to {str(folder)!r} (beside --output {str(table)!r}), which is a "
                              "file; pass another --output, e.g. a new folder: --output preds/")
    names: list[str] = []
    if table.is_file() and _is_our_prediction(table):
        with table.open(newline="", encoding="utf-8", errors="replace") as fh:
            names = [row["name"] for row in csv.DictReader(fh) if row.get("name")]
    foreign = sorted(p for p in folder.rglob("*") if p.is_file() and not (p.name.startswith(".") and p.suffix == ".tmp")
                     and not any(p.name.startswith(n) for n in names))
    if foreign:
        raise FileExistsError(
            f"predicted masks go to {str(folder)!r} (beside --output {str(table)!r}), which holds {len(foreign)} "
            f"file(s) no earlier prediction there wrote (e.g. {foreign[0].name!r}); they may be your data, so nothing "
            "was written. Pass another --output, e.g. a new folder: --output preds/"
        )


def write_error(err: BaseException, path: str | os.PathLike, *, metrics: dict[str, float] | None = None,
                kept: str | None = None) -> RunWriteError:
    """A :class:`RunWriteError` for ``err`` raised while writing ``path``: names the path, the cause and the fix.

    A full disk is named as such, also when the error is torch's writer error with the ``OSError``
    behind it, or has no error number but the disk had no space left when the write failed (the
    free space measured then, by :func:`~mmix_applied.utils.atomic.atomic_write`, is reported
    beside the space after the partial file was removed). A folder that disappeared (a run
    directory deleted while the run writes to it) is named as such.

    Args:
        err: The ``OSError`` (or torch's writer ``RuntimeError``) of the failed write.
        path: The file being written (``bytes`` paths, as TensorBoard's writer reports them, too).
        metrics: Results computed before the write, kept on the error for the caller to show.
        kept: What was left intact (e.g. the previous checkpoint), said in the message.
    """
    path = Path(os.fsdecode(path))
    chain = _chain(err)
    code = next((e.errno for e in chain if isinstance(e, OSError) and e.errno), None)
    free = _free_bytes(path)
    free_then = next((e.free_bytes_at_failure for e in chain if hasattr(e, "free_bytes_at_failure")), None)
    missing = _missing_folder(path) if code in (errno.ENOENT, None) else None
    writer = "" if code or isinstance(err, OSError) else f" (torch's writer: {' '.join(str(err).split())})"
    full = code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free_then is not None and free_then < 2**20)
    if missing is not None:
        cause = (f"[Errno {errno.ENOENT}] {os.strerror(errno.ENOENT)}: the folder {str(missing)!r} no longer exists "
                 "(it was deleted or moved while the run was writing to it)")
        disk = ""
        fix = "nothing more can be saved there; put the folder back, or start the run again"
    elif full:
        what = "the disk quota is used up" if code == errno.EDQUOT else "the disk is full"
        cause = f"[Errno {code}] {os.strerror(code)}: {what}{writer}" if code else f"{what}{writer}"
        if free_then is not None and free is not None:
            disk = (f" ({free_then / 2**20:.1f} MiB free there when the write failed, {free / 2**20:.1f} MiB after "
                    "its partial file was removed)")
        else:
            disk = f"; {free / 2**20:.1f} MiB free there" if free is not None else ""
        fix = "free some space or set run.dir to another disk"
    else:
        cause = f"[Errno {code}] {os.strerror(code)}" if code else f"the writer failed ({' '.join(str(err).split())})"
        disk = f"; {free / 2**20:.1f} MiB free there" if free is not None and code is None else ""
        if code in (errno.EROFS, errno.EACCES, errno.EPERM):
            fix = "make the folder writable or set run.dir (or --output) to a writable folder"
        else:
            fix = "check the folder and the disk, or set run.dir to another folder"
    keep = f"; {kept}" if kept else ""
    return RunWriteError(f"cannot write {str(path)!r}: {cause}{disk}{keep}; {fix}", path=path, metrics=metrics)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors behind it (``__cause__``, else ``__context__``), at most 8 deep."""
    found: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in found and len(found) < 8:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _missing_folder(path: Path) -> Path | None:
    """The outermost missing folder above ``path`` when one below an existing folder has gone, else None."""
    missing = None
    for folder in (path.parent, *path.parents):
        if folder.exists():
            return missing
        missing = folder
    return None


def _free_bytes(path: Path) -> int | None:
    for folder in (path.parent, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def check_run_name(name: str) -> None:
    """A run name is a folder inside ``run.dir``: relative, without ``..`` (nested names such as ``a/b`` are fine)."""
    parts = PurePath(name).parts
    if PurePath(name).is_absolute() or not parts or ".." in parts or "\0" in name:
        raise ConfigError(
            f"config key 'run.name': received {name!r}; a run name is a folder inside run.dir, so it must be "
            "relative and must not contain '..' (it would write outside run.dir). Use e.g. run.name=my-run, "
            "and run.dir to choose where runs go"
        )
