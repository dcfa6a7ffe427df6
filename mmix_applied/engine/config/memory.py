"""A lower estimate of the memory one training batch needs, checked against the machine's memory.

``data.image_size=20000`` used to die inside OpenBLAS (or be killed by the kernel) minutes into a
run. Before anything runs, the config's sizes give the float32 input batch; a network keeps far
more than that for the backward pass. Measured with ``benchmarks/activation_memory.py`` (autograd's
saved tensors, batch 2, 128 px): timm ``test_resnet`` keeps 94 times its input, ``resnet18`` 168
times (RGB) and 502 times (grayscale). :data:`ACTIVATION_FACTOR` is 32, below all of them, so a
config that is refused could never have run, and a config that passes may still be too big for
the GPU.
"""

from __future__ import annotations

import math
import os
from typing import Any

from mmix_applied.errors import ConfigError

__all__ = ["ACTIVATION_FACTOR", "check_memory", "machine_memory_bytes", "training_batch"]

#: Bytes kept for backward per byte of float32 input (a lower bound: see the module docstring).
ACTIVATION_FACTOR = 32


_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_bytes() -> int | None:
    """Memory this process may use in bytes: physical memory, or a smaller cgroup (container) limit.

    ``None`` where the OS does not say.
    """
    try:
        found = [int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))]
    except (AttributeError, ValueError, OSError):
        found = []
    for path in _CGROUP_LIMITS:
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" means no limit
            found.append(int(text))
    return min(found) if found else None


def training_batch(cfg: Any) -> tuple[str, list[int]] | None:
    """The key that sets the input size and the training batch's shape, where the config fixes it."""
    d = cfg.data
    batch = getattr(d, "batch_size", 1)
    if hasattr(d, "image_size"):  # classification: square images
        mnist = getattr(d, "source", None) == "mnist"
        size = d.image_size or (28 if mnist else 224)
        return "data.image_size", [batch, d.channels or (1 if mnist else 3), size, size]
    if getattr(d, "spatial_dims", None) == 3 and hasattr(d, "patch_size"):
        return "data.patch_size", [batch * d.num_samples, d.in_channels, *d.patch_size]
    if getattr(d, "crop_size", None):
        return "data.crop_size", [batch, d.in_channels, *d.crop_size]
    if hasattr(d, "height") and getattr(d, "max_width", None):
        return "data.height", [batch, 1, d.height, d.max_width]
    return None


def check_memory(cfg: Any, *, available: int | None = None) -> None:
    """Refuse a config whose training batch cannot fit in this machine's memory.

    Args:
        cfg: A range-checked :class:`~mmix_applied.engine.config.schema.Config`.
        available: Memory in bytes (default: this machine's physical memory).

    Raises:
        ConfigError: Naming the key, the batch shape, the estimated and the available memory.
    """
    found = training_batch(cfg)
    available = machine_memory_bytes() if available is None else available
    if found is None or not available:
        return
    key, shape = found
    need = math.prod(shape) * 4 * ACTIVATION_FACTOR
    if need > available:
        shown = " x ".join(map(str, shape))
        raise ConfigError(
            f"config key {key!r}: a training batch of {shown} float32 values needs an estimated "
            f"{need / 2**30:.1f} GiB or more ({ACTIVATION_FACTOR} times the input, a lower bound of what a "
            f"network keeps for backward), more than the {available / 2**30:.1f} GiB of memory here (physical "
            "memory or the container's limit) "
            f"(received {key}={_get(cfg, key)!r}, data.batch_size={cfg.data.batch_size}); lower {key} or "
            "data.batch_size")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
