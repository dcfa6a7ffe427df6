"""Optimizers and per-step learning-rate schedules from the ``optim`` and ``scheduler`` config sections."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["FUSED_DEVICES", "WarmupSchedule", "build_optimizer", "build_scheduler", "fused_supported"]


#: Devices torch has a fused Adam/AdamW/SGD kernel for (CPU since torch 2.4).
FUSED_DEVICES = ("cpu", "cuda")


def fused_supported(groups: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether torch's fused update applies to every parameter of ``groups``, and why not."""
    params = [p for g in groups for p in g["params"]]
    if not params:
        return False, "no parameters"
    for p in params:
        if p.device.type not in FUSED_DEVICES:
            return False, f"a parameter is on {p.device.type!r} (fused kernels: {', '.join(FUSED_DEVICES)})"
        if not p.is_floating_point():
            return False, f"a parameter has dtype {p.dtype} (fused kernels take floating point)"
    return True, ""


def _clipping_conflict(precision: str | int | None, gradient_clipping: bool) -> str:
    """Why Lightning cannot run a fused update here ("" when it can)."""
    text = str(precision or "32")
    if gradient_clipping and ("mixed" in text or text in ("16", "bf16")):
        return (f"Lightning refuses gradient clipping with a fused optimizer under {text!r} precision (the fused "
                "kernel unscales gradients itself)")
    return ""


def build_optimizer(groups: list[dict[str, Any]], optim_cfg: Any, *, precision: str | int | None = None,
                    gradient_clipping: bool = False) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD over parameter ``groups`` (each may carry its own ``lr``).

    ``optim_cfg.fused`` (``auto``, ``true``, ``false``): torch's fused update where it has one for
    the parameters' device (``auto``), required (``true``: an error names why it cannot), or
    torch's default ``foreach`` update (``false``). The fused kernel computes the same update
    (equal to float rounding) in one pass; on a CPU it is 4-10x faster than ``foreach``
    (``benchmarks/optimizer_step.py``). ``auto`` keeps ``foreach`` where Lightning cannot use a
    fused optimizer: gradient clipping (``gradient_clipping``) under a mixed ``precision``.
    """
    name = optim_cfg.name
    if name not in ("adamw", "adam", "sgd"):
        raise ValueError(f"optim.name must be 'adamw', 'adam' or 'sgd', received {name!r}")
    want = getattr(optim_cfg, "fused", False)
    ok, why = fused_supported(groups)
    conflict = _clipping_conflict(precision, gradient_clipping)
    if ok and conflict:
        ok, why = False, conflict
    if want is True and not ok:
        raise ValueError(f"optim.fused=true: no fused {name} update here: {why}; "
                         "set optim.fused: auto (fused where possible) or false")
    extra = {"fused": True} if (want is True or (want == "auto" and ok)) else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, **extra)
    if name == "adam":
        return torch.optim.Adam(groups, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, **extra)
    return torch.optim.SGD(groups, lr=optim_cfg.lr, momentum=optim_cfg.momentum,
                           nesterov=optim_cfg.nesterov, weight_decay=optim_cfg.weight_decay, **extra)


class WarmupSchedule:
    """Learning-rate multiplier per optimizer step: linear warm-up, then cosine or multi-step.

    A picklable callable (not a lambda), so ``LambdaLR.state_dict`` captures it fully.
    """

    def __init__(self, *, kind: str, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0,
                 milestones: tuple[int, ...] = (), gamma: float = 0.1) -> None:
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.min_lr_ratio = float(min_lr_ratio)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "multistep":
            return self.gamma ** sum(step >= m for m in self.milestones)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, sched_cfg: Any, *, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step ``LambdaLR`` for the ``scheduler`` section, or ``None`` for ``name: none`` without warm-up."""
    warmup = int(round(sched_cfg.warmup_epochs * steps_per_epoch))
    if sched_cfg.name == "none" and warmup == 0:
        return None
    schedule = WarmupSchedule(kind=sched_cfg.name, total_steps=total_steps, warmup_steps=warmup,
                              min_lr_ratio=sched_cfg.min_lr_ratio,
                              milestones=tuple(m * steps_per_epoch for m in sched_cfg.milestones),
                              gamma=sched_cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
