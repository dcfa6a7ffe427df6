"""Safe checkpoint I/O: atomic saves (through :mod:`mmix_applied._io`) and ``weights_only`` loads.

A kill during a save leaves the previous file intact; checkpoints load with ``weights_only=True``.
``atomic_write`` and ``atomic_write_text`` are re-exported from :mod:`mmix_applied._io`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mmix_applied._io import atomic_write, atomic_write_text
from mmix_applied.engine.rundir import write_error

__all__ = ["AtomicCheckpointIO", "CheckpointError", "atomic_write", "atomic_write_text", "load_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or holds objects that are not safe to load."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; clear errors for missing, empty or damaged files.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file is empty, truncated, not a torch file, or holds objects that are
            not safe to load (never loaded with ``weights_only=False``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): it was never written completely "
                              f"(truncated, corrupt); use another checkpoint from {str(path.parent)!r} or train again")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # a global outside the weights-only allow-list
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a safe checkpoint: it holds objects other than tensors and plain "
            f"values ({_unsafe_detail(err)}), and mmix-applied never unpickles those. Use a checkpoint written "
            f"by mmix-applied fit (e.g. from {str(path.parent)!r})"
        ) from err
    except Exception as err:  # truncated zip, not a torch file
        raise CheckpointError(
            f"checkpoint {str(path)!r} ({size} bytes) cannot be read: it is truncated, corrupt or not a torch "
            f"checkpoint ({type(err).__name__}: {_first_sentence(err)}); use another checkpoint from "
            f"{str(path.parent)!r}"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def _first_sentence(err: BaseException) -> str:
    """Torch's message up to its first full stop (whole sentences only), or the error's repr."""
    text = " ".join(str(err).split())
    if not text:
        return repr(err)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _unsafe_detail(err: BaseException) -> str:
    """The line of torch's weights-only error that names the blocked global (never its advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    detail = named[0] if named else "an object of an unsupported type"
    return detail.rstrip(".")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that saves atomically and loads with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` through a temporary file and a rename.

        Raises:
            RunWriteError: The folder is read-only or the disk is full (the previous file is kept).
        """
        path = Path(path)
        kept = f"the previous {path.name} is kept unchanged" if path.exists() else None
        try:
            atomic_write(path, lambda fh: torch.save(checkpoint, fh))
        except OSError as err:
            raise write_error(err, path, kept=kept) from err
        except RuntimeError as err:  # torch's zip writer: "[enforce fail at inline_container.cc] unexpected pos"
            if "inline_container" not in str(err) and "PytorchStreamWriter" not in str(err):
                raise
            raise write_error(err, path, kept=kept) from err

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """Load with ``weights_only=True`` whatever the caller asks."""
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")
