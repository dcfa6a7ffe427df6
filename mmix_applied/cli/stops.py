"""What ``mmix-applied`` says when Ctrl-C (SIGINT) or SIGTERM stops a command.

One line on standard error: what was saved, and the exact command that continues (``fit``) or
runs again. The exit status is 128 + the signal number: 130 for SIGINT, 143 for SIGTERM, as a
shell reports a process a signal ended (before, Lightning made a SIGTERM exit 0, as if the run
had finished). The handlers themselves are in :mod:`mmix_applied.utils.interrupts`.

Also here: a TensorBoard writer thread that fails on a deleted or full folder no longer prints its
own traceback; the same error reaches the run in the main thread, which reports it as one line.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmix_applied.utils.interrupts import Stopped

__all__ = ["CommandContext", "quiet_rank", "quiet_writer_threads", "stop_message"]


@dataclass
class CommandContext:
    """What the running command has resolved so far (filled in as it goes; read when it is stopped).

    Attributes:
        args: The parsed arguments (None until parsed).
        config: The resolved config (None until loaded); ``fit`` sets its ``run.name`` when it makes one.
        started: When the command started (``time.time()``), to tell files it wrote from older ones.
    """

    args: Any = None
    config: Any = None
    started: float = field(default=0.0)


def _command_line(argv: Sequence[str]) -> str:
    return "mmix-applied " + shlex.join(list(argv))


def _position(ckpt: Path) -> str:
    """``after N epoch(s), global step S`` of a checkpoint (read lazily: its tensors stay on disk)."""
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        return f"after {int(state['epoch']) + 1} epoch(s), global step {int(state['global_step'])}"
    except Exception:  # an unreadable checkpoint: say nothing about it here
        return "its epoch could not be read"


def _written_since(path: Path | None, started: float) -> bool:
    try:
        return path is not None and path.is_file() and path.stat().st_mtime >= started
    except OSError:
        return False


def _fit(stop: Stopped, context: CommandContext, again: str) -> str:
    config = context.config
    run = Path(config.run.dir) / config.run.name if config is not None and config.run.name else None
    last = run / "checkpoints" / "last.ckpt" if run is not None else None
    if last is None or not last.is_file():
        where = f" of {str(run)!r}" if run is not None and run.exists() else ""
        return (f"{stop} during fit, before the first checkpoint{where} (one is saved at the end of each epoch), so "
                f"there is nothing to resume; start again with: {again}")
    when = "saved by this run" if _written_since(last, context.started) else "no new one was saved by this run"
    return (f"{stop} during fit; the last checkpoint is {str(last)!r} ({_position(last)}; {when}); continue with: "
            f"mmix-applied fit --resume {shlex.quote(str(run))}")


def _run_dir(context: CommandContext) -> Path | None:
    from mmix_applied.engine.runner import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(context.args.checkpoint, context.config)
    except Exception:
        return None
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def _test(stop: Stopped, context: CommandContext, again: str) -> str:
    run = _run_dir(context)
    target = run / "test_metrics.json" if run is not None else None
    said = (f"{str(target)!r} was written before the stop" if _written_since(target, context.started)
            else "test_metrics.json was not written")
    return f"{stop} during test: {said}; run it again with: {again}"


def _predict(stop: Stopped, context: CommandContext, again: str) -> str:
    from mmix_applied.engine.rundir import prediction_output

    run = _run_dir(context)
    try:
        target = prediction_output(context.args.output, run_dir=run, overwrite=True) if run is not None else None
    except Exception:
        target = None
    written = _written_since(target, context.started)
    said = (f"the predictions were written to {str(target)!r} before the stop" if written
            else "no prediction file was written (each is written whole or not at all)")
    return f"{stop} during predict: {said}; run it again with: {again}"


def stop_message(stop: Stopped, argv: Sequence[str], context: CommandContext) -> str:
    """The one line printed when ``stop`` ended the command run as ``mmix-applied ARGV``."""
    again = _command_line(argv)
    command = getattr(context.args, "command", None)
    if command is None:
        return f"{stop} while starting, before anything was written; run it again with: {again}"
    if command == "fit":
        return _fit(stop, context, again)
    if command == "test":
        return _test(stop, context, again)
    if command == "predict":
        return _predict(stop, context, again)
    if command == "compare":
        out = getattr(context.args, "out", None)
        return (f"{stop} during compare; the runs finished so far are kept in {str(out)!r}; the same command "
                f"continues the comparison: {again}")
    return f"{stop} during {command} (files are written whole or not at all); run it again with: {again}"


def quiet_writer_threads() -> Callable[[], None]:
    """Silence the traceback of TensorBoard's writer thread when a write fails (``OSError``); returns the undo.

    The thread keeps the error, and the run's next log call raises it in the main thread, where it
    is reported as one line naming the file (e.g. a run directory deleted mid-run). Other threads'
    errors are printed as before.
    """
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    threading.excepthook = hook

    def restore() -> None:
        if threading.excepthook is hook:
            threading.excepthook = previous

    return restore


def quiet_rank() -> bool:
    """Whether this process is a DDP worker other than the launching one (it prints nothing when stopped)."""
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0")
