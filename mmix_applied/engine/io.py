"""Safe checkpoint I/O: atomic saves (through :mod:`mmix_applied._io`) and ``weights_only`` loads.

A kill during a save leaves the previous file intact; checkpoints load with ``weights_only=True``.
``atomic_write`` and ``atomic_write_text`` are re-exported from :mod:`mmix_applied._io`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mmix_applied._io import atomic_write, atomic_write_text

__all__ = ["AtomicCheckpointIO", "CheckpointError", "atomic_write", "atomic_write_text", "load_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or holds objects that are not safe to load."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; clear errors for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, unsafe global
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
            "It is truncated, corrupt, not a checkpoint, or holds objects that are unsafe to unpickle; "
            f"use another checkpoint from {str(path.parent)!r}."
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that saves atomically and loads with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` through a temporary file and a rename."""
        atomic_write(path, lambda fh: torch.save(checkpoint, fh))

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """Load with ``weights_only=True`` whatever the caller asks."""
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")
