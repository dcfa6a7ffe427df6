"""Reading checkpoint files safely: ``weights_only=True`` always, and clear errors for damaged files.

The one checkpoint reader of the project (the engine's resume/test/predict, ``load_run`` and
``export``): it runs no code from a file (torch's weights-only unpickler), and a missing, empty,
truncated or unsafe file is reported with what it is and what to use instead. Lightning-free, so
reading a run's checkpoint loads no training engine.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from mmix_applied.errors import MmixError

__all__ = ["CheckpointError", "load_checkpoint", "unsafe_global_detail"]


class CheckpointError(MmixError, ValueError):
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
            f"values ({unsafe_global_detail(err)}), and mmix-applied never unpickles those. Use a checkpoint written "
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


def unsafe_global_detail(err: BaseException) -> str:
    """The line of torch's weights-only error naming the blocked global; never its advice to load with
    ``weights_only=False`` (which would run code from the file)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named[0] if named else "an object of an unsupported type").rstrip(".")
