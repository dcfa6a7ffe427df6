"""What every task adapter shares: validation helpers and the mixed-target contract.

An adapter says how targets (or, where targets cannot be interpolated, losses) mix for one
output type, reading the same :class:`~mmix_applied.plan.MixPlan` the model mixed with. With
``plan=None`` every adapter computes the ordinary, unmixed loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..functional import mix
from ..plan import MixPlan

__all__ = ["TaskAdapter", "box_for", "check_batch", "check_tensor", "mix_dense", "mix_batch"]


def check_tensor(value: Any, name: str, adapter: str) -> Tensor:
    """Raise a TypeError naming the adapter and argument unless ``value`` is a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{adapter}: {name} must be a torch.Tensor; received {type(value).__name__}.")
    return value


def check_batch(output: Tensor, target: Tensor, adapter: str, *, target_dim: int = 0) -> None:
    """Raise a ValueError when output and target batch sizes differ."""
    if target.dim() <= target_dim or output.shape[0] != target.shape[target_dim]:
        raise ValueError(
            f"{adapter}: output batch size {output.shape[0]} (output shape {tuple(output.shape)}) differs "
            f"from target batch size (target shape {tuple(target.shape)}); pass the targets of the same batch."
        )


def mix_batch(value: Tensor, plan: MixPlan) -> Tensor:
    """``lam * value + (1 - lam) * value[perm]`` along dim 0, ignoring the box (per-sample targets)."""
    _check_plan(value, plan)
    return mix(value, plan.lam, plan.perm)


def mix_dense(value: Tensor, plan: MixPlan) -> Tensor:
    """Mix a dense (B, C, *spatial) target: interpolate, or in cutmix swap the plan's box resized to it."""
    _check_plan(value, plan)
    box = None if plan.box is None else box_for(plan.box, value.dim() - 2)
    return mix(value, plan.lam, plan.perm, box=box)


def _check_plan(value: Tensor, plan: MixPlan) -> None:
    if value.shape[0] != plan.batch_size:
        raise ValueError(
            f"the plan was drawn for batch size {plan.batch_size} but the target has batch size "
            f"{value.shape[0]}; pass the plan returned with this batch's output."
        )


def box_for(box: Tensor, spatial: int) -> Tensor:
    """The plan's box for a target with ``spatial`` dims: its last dims, or padded with whole-extent
    ``[0, 1]`` rows in front (a 2D box on a 3D mask swaps the box through every slice)."""
    if box.shape[0] == spatial:
        return box
    if box.shape[0] > spatial:
        return box[-spatial:]
    return torch.cat([box.new_tensor([[0.0, 1.0]] * (spatial - box.shape[0])), box])


class TaskAdapter(nn.Module):
    """Base class: ``loss(output, target, plan=None)``; ``forward`` is ``loss``.

    Like timm's tasks and torch losses, an adapter is an ``nn.Module`` so it moves with
    ``.to(device)`` and can hold buffers (class weights).
    """

    #: Whether training metrics may be computed on this batch: False for mixed steps, since
    #: accuracy against mixed targets is meaningless.
    @staticmethod
    def metrics_valid(plan: MixPlan | None) -> bool:
        return plan is None

    def loss(self, output: Any, target: Any, plan: MixPlan | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, output: Any, target: Any, plan: MixPlan | None = None) -> Tensor:
        return self.loss(output, target, plan)
