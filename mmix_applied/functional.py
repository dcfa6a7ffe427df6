"""Pure mixing functions: the math of Manifold Mixup with no state.

Manifold Mixup (Verma et al., "Manifold Mixup: Better Representations by Interpolating Hidden
States", ICML 2019) replaces a hidden state ``h`` by ``lam * h + (1 - lam) * h[perm]``.
Hidden-state CutMix (as in PatchUp, Faramarzi et al., AAAI 2022) swaps a box between partners.

Everything here is a function of tensors only, so the stateful mixer, the traced graphs and the
task adapters all share one implementation, and tests can recompute expected values by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["mix", "mix_value", "box_mask", "lam_view", "BatchDims"]

#: A batch-dimension declaration: one int for every tensor of a value, or a tuple mirroring a
#: tuple/list output (``None`` leaves that element unmixed). ``nn.LSTM`` without ``batch_first``
#: returns ``(out, (h, c))``, all batch-at-dim-1, so ``1`` covers it; with ``batch_first`` use
#: ``(0, 1)``: the sequence at dim 0, both hidden states at dim 1.
BatchDims = int | None | Sequence[Any]


def lam_view(lam: Tensor, like: Tensor, batch_dim: int = 0) -> Tensor:
    """Cast ``lam`` to ``like``'s dtype and device and shape it to broadcast along ``batch_dim``.

    Args:
        lam: 0-d (one lam for the batch) or shape ``(B,)`` (one per sample).
        like: the tensor the weight will multiply.
        batch_dim: the dimension of ``like`` that indexes samples.
    """
    lam = lam.to(dtype=like.dtype, device=like.device)
    if lam.dim() == 0:
        return lam
    shape = [1] * like.dim()
    shape[batch_dim] = lam.shape[0]
    return lam.view(shape)


def box_mask(box: Tensor, size: Sequence[int], *, device: torch.device | None = None) -> Tensor:
    """Boolean mask of shape ``size`` that is True inside ``box``.

    Args:
        box: ``(S, 2)`` fractional ``[start, end)`` per spatial dimension, in [0, 1]. A pixel
            belongs to the box when its centre does, so a box drawn on a coarse grid scales
            exactly to any finer grid whose size is a multiple.
        size: the ``S`` spatial sizes of the tensor the mask is for (the last ``S`` dimensions).
        device: where to build the mask (default: ``box``'s device).
    """
    device = box.device if device is None else device
    box = box.to(device=device, dtype=torch.float64)
    mask: Tensor | None = None
    for d, n in enumerate(size):
        centres = (torch.arange(n, device=device, dtype=torch.float64) + 0.5) / n
        inside = (centres >= box[d, 0]) & (centres < box[d, 1])
        shape = [1] * len(size)
        shape[d] = n
        inside = inside.view(shape)
        mask = inside if mask is None else mask & inside
    if mask is None:
        raise ValueError("box_mask needs at least one spatial dimension; received size=().")
    return mask


def mix(h: Tensor, lam: Tensor, perm: Tensor, *, batch_dim: int = 0, box: Tensor | None = None) -> Tensor:
    """Mix one tensor with its batch partners.

    ``mixup``: ``lam * h + (1 - lam) * h[perm]`` (lam broadcast per sample when it is a vector).
    ``cutmix`` (``box`` given): the partner's values inside the box, ``h`` outside; the box covers
    the last ``S`` dimensions of ``h`` (its spatial dimensions, ``S = box.shape[0]``).

    The result keeps ``h``'s dtype, so mixing under autocast does not promote bf16/fp16 states,
    and its memory layout (``channels_last``, ``channels_last_3d``): the partners are gathered in
    ``h``'s own dimension order, with no extra copy.
    """
    partner = _take(h, batch_dim, perm.to(h.device))
    if box is None:
        # lerp(partner, h, lam) = partner + lam * (h - partner) = lam*h + (1-lam)*partner
        return torch.lerp(partner, h, lam_view(lam, h, batch_dim))
    spatial = box.shape[0]
    if h.dim() < spatial + 2:
        raise ValueError(
            f"cutmix needs a state of shape (B, C, *spatial) with {spatial} spatial dims; received a "
            f"tensor of shape {tuple(h.shape)}. Use mode='mixup' for this point, or choose points "
            "with a spatial layout (convolutional stages)."
        )
    mask = box_mask(box, h.shape[-spatial:], device=h.device)
    return torch.where(mask, partner, h)


def _take(h: Tensor, batch_dim: int, perm: Tensor) -> Tensor:
    """``h.index_select(batch_dim, perm)`` laid out as ``h`` is (``index_select`` alone returns a
    contiguous tensor, which would turn a channels-last state into a contiguous one)."""
    if h.is_contiguous() or h.dim() < 2:
        return h.index_select(batch_dim, perm)
    order = sorted(range(h.dim()), key=lambda d: -h.stride(d))  # outermost dimension first
    dense = h.permute(order)
    if not dense.is_contiguous():  # not a permutation of a dense tensor (a view with gaps)
        return h.index_select(batch_dim, perm)
    taken = dense.index_select(order.index(batch_dim), perm)
    return taken.permute([order.index(d) for d in range(h.dim())])


def _mixable(h: Tensor, batch_dim: int, batch_size: int) -> bool:
    return h.is_floating_point() and h.dim() > batch_dim and h.shape[batch_dim] == batch_size


def mix_value(value: Any, lam: Tensor, perm: Tensor, box: Tensor | None = None, batch_dims: BatchDims = 0) -> Any:
    """Mix every floating tensor of a (possibly nested) value that carries the batch.

    This is the rule for module outputs that are not one tensor: tuples, lists and dicts are
    walked, and each floating tensor whose ``batch_dims`` dimension has the batch size is mixed;
    integer tensors (indices, lengths) and tensors without the batch pass through unchanged.

    Args:
        value: a tensor, or a tuple/list/dict of them (nested).
        lam: the plan's lam.
        perm: the plan's permutation; its length is the batch size.
        box: the plan's box (cutmix) or None.
        batch_dims: an int for every tensor, or a tuple mirroring a tuple/list ``value``.
    """
    if batch_dims is None:
        return value
    if isinstance(value, Tensor):
        if isinstance(batch_dims, int) and _mixable(value, batch_dims, perm.shape[0]):
            return mix(value, lam, perm, batch_dim=batch_dims, box=box)
        return value
    if isinstance(value, (tuple, list)):
        dims = batch_dims if isinstance(batch_dims, (tuple, list)) else [batch_dims] * len(value)
        if len(dims) != len(value):
            raise ValueError(
                f"batch_dims {batch_dims!r} has {len(dims)} entries but the value has {len(value)}; "
                "declare one entry per element (None to leave one unmixed), or a single int."
            )
        mixed = [mix_value(v, lam, perm, box, d) for v, d in zip(value, dims)]
        if hasattr(value, "_fields"):  # namedtuple
            return type(value)(*mixed)
        return type(value)(mixed)
    if isinstance(value, dict):
        return type(value)((k, mix_value(v, lam, perm, box, batch_dims)) for k, v in value.items())
    return value
