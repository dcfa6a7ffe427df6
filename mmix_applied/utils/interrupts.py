"""Stopping a command cleanly on SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's time limit).

The command line installs these handlers for the length of a command (:func:`install`). The first
signal raises :class:`Stopped` in the main thread: a ``BaseException``, so no ``except Exception``
swallows it, and Lightning passes it on after its own clean-up (callbacks' ``on_exception``,
loggers finalised) instead of turning it into a bare ``SystemExit`` (Lightning's SIGTERM
handling) or ``sys.exit(1)`` (its ``KeyboardInterrupt`` handling). The command line then says
what was saved and how to continue, and exits with 128 + the signal number (130, 143).

Inside an atomic write (:func:`deferred`, which :func:`~mmix_applied.utils.atomic.atomic_write`
enters) the stop waits until the file is complete and renamed: a checkpoint being saved when
Ctrl-C arrives is finished first. A second signal during such a write stops at once (the write's
temporary file is removed and the previous file kept).

Processes forked from the command (DataLoader workers) inherit the handlers; there they do
nothing: the command stops them as it shuts its loaders down, so no worker prints a traceback.
Without :func:`install` (library use) Python's own handlers apply and nothing here is active.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["SIGNALS", "Stopped", "deferred", "ignore", "install", "received"]

#: The signals that stop a command cleanly.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """The command was asked to stop by a signal.

    Attributes:
        signum: The signal number (``signal.SIGINT`` or ``signal.SIGTERM``).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by this signal: 128 + its number (130, 143)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}"


class _State:
    pid: int | None = None  # the process the handlers were installed in
    depth = 0  # atomic writes in progress in the main thread
    pending: int | None = None  # a signal received during one, raised when it ends
    received: int | None = None  # the first signal received since install()
    ignoring = False  # set by ignore(): the command is reporting its stop


def _handle(signum: int, _frame: FrameType | None) -> None:
    if os.getpid() != _State.pid or _State.ignoring:  # a forked process (a DataLoader worker): the command stops it
        return
    if _State.received is None:
        _State.received = signum
    if _State.depth and _State.pending is None:  # finish the file being written, then stop
        _State.pending = signum
        return
    _State.pending = None
    raise Stopped(signum)


def install() -> Callable[[], None]:
    """Handle SIGINT and SIGTERM as described above; returns a function that puts the previous handlers back.

    Only the main thread can set signal handlers; from another thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {s: signal.getsignal(s) for s in SIGNALS}
    state = (_State.pid, _State.depth, _State.pending, _State.received, _State.ignoring)
    _State.pid, _State.depth, _State.pending, _State.received, _State.ignoring = os.getpid(), 0, None, None, False
    for s in SIGNALS:
        signal.signal(s, _handle)

    def restore() -> None:
        for s, handler in previous.items():
            if signal.getsignal(s) is _handle and handler is not None:
                signal.signal(s, handler)
        _State.pid, _State.depth, _State.pending, _State.received, _State.ignoring = state  # an outer install's

    return restore


def ignore() -> None:
    """Ignore further signals until the handlers are restored (while the command reports how it stopped)."""
    _State.ignoring = True


def received() -> int | None:
    """The first signal received since :func:`install` (None if none was, or nothing is installed)."""
    return _State.received if _State.pid == os.getpid() else None


@contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop back until the block ends (a second signal still stops at once).

    When the block ends normally with a stop pending, :class:`Stopped` is raised there; when it
    ends with an error, the error goes on (the command ends either way). Outside the main thread,
    or without :func:`install`, this does nothing.
    """
    if _State.pid != os.getpid() or threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    except BaseException:
        _State.depth -= 1
        if not _State.depth:
            _State.pending = None
        raise
    _State.depth -= 1
    if not _State.depth and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Stopped(signum)
