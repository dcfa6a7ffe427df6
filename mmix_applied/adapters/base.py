"""What every task adapter shares: validation helpers and the mixed-target contract.

An adapter says how targets (or, where targets cannot be interpolated, losses) mix for one
output type, reading the same :class:`~mmix_applied.core.plan.MixPlan` the model mixed with. With
``plan=None`` every adapter computes the ordinary, unmixed loss.

Adapters
--------
- **Two ways to use one.** ``adapter.loss(output, target, plan)`` is the whole mixed loss.
  ``adapter.mix_targets(target, plan)`` returns the mixed target instead, for a loop whose loss
  stays ``criterion(output, target)`` (e.g. timm's ``SoftTargetCrossEntropy``); ``plan=None``
  returns the unmixed target, so the loop needs no branch. Targets that cannot be interpolated
  (CTC label sequences) raise a ``TypeError`` there: use ``adapter.loss`` (loss mixing).
- **Compile.** ``loss`` and ``mix_targets`` trace under ``torch.compile`` with no graph break:
  shape and dtype checks are static and always run; checks of target *values* (class ranges,
  NaN/Inf, CTC labels) need a device sync, so they run eagerly only and are skipped while
  ``torch.compiler.is_compiling()`` is true. Run one eager step first (or keep ``validate=True``
  outside the compiled region) to check the data.
- **MONAI.** ``MetaTensor`` outputs and targets are read as plain tensors (their metadata is not
  needed for a loss), so the compiled graph never sees the subclass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmix_applied.core.functional import mix
from mmix_applied.core.plan import MixPlan

__all__ = ["Adapter", "TaskAdapter", "box_for", "check_batch", "check_tensor", "checking_values", "mix_dense",
           "mix_batch", "plain"]


def check_tensor(value: Any, name: str, adapter: str) -> Tensor:
    """Raise a TypeError naming the adapter and argument unless ``value`` is a tensor.

    Returns the value as a plain tensor (see :func:`plain`).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{adapter}: {name} must be a torch.Tensor; received {type(value).__name__}.")
    return plain(value)


def plain(value: Tensor) -> Tensor:
    """``value`` as a plain ``torch.Tensor`` when it is MONAI's ``MetaTensor`` (or any tensor subclass with
    an ``as_tensor()`` view): no copy, autograd kept, so losses neither carry nor trace its metadata.
    Other tensors (parameters, fake or functorch tensors) pass through untouched."""
    if type(value) is not Tensor and callable(getattr(value, "as_tensor", None)):
        return value.as_tensor()
    return value


def checking_values(validate: bool) -> bool:
    """Whether to run checks of tensor *values*: ``validate`` and not inside ``torch.compile``.

    Value checks (``int(t.min())``, ``.any()``) sync the device and break a compiled graph, so
    they run in eager calls only; shape checks are static and always run.
    """
    return bool(validate) and not torch.compiler.is_compiling()


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


class Adapter(nn.Module):
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
        """The loss of ``output`` against ``target``, mixed as ``plan`` says; each adapter implements it.

        Args:
            output: The model's output for the batch (its type and shape are the adapter's).
            target: The batch's unmixed targets, in the adapter's layout.
            plan: The :class:`~mmix_applied.core.plan.MixPlan` the model mixed this batch with (the
                one ``ManifoldMixup`` returned with the output); ``None`` for an unmixed step.

        Returns:
            A scalar loss tensor (float32), differentiable with respect to ``output``.

        Raises:
            NotImplementedError: Always, on the base class.
        """
        raise NotImplementedError

    def mix_targets(self, target: Any, plan: MixPlan | None) -> Any:
        """The target mixed as ``plan`` says (``plan=None``: the unmixed target), for a loop whose loss
        is ``criterion(output, target)``. Adapters whose targets cannot be interpolated raise a TypeError."""
        raise TypeError(
            f"{type(self).__name__} mixes losses, not targets; received a call to mix_targets. "
            "Use adapter.loss(output, target, plan) instead."
        )

    def forward(self, output: Any, target: Any, plan: MixPlan | None = None) -> Tensor:
        """``adapter(output, target, plan)`` is :meth:`loss`, so an adapter is called like a torch loss."""
        return self.loss(output, target, plan)


#: The earlier name (one word per concept: an *adapter* mixes an output type); kept as an alias.
TaskAdapter = Adapter
