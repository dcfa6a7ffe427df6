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
from torch.autograd.function import once_differentiable

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


def _inverse(perm: Tensor) -> Tensor:
    """The inverse permutation: ``inv[perm[i]] = i``."""
    return torch.argsort(perm)


def _sample_slices(t: Tensor, batch_dim: int) -> bool:
    """Whether per-sample slices of ``t`` are worth a loop: eager, on CPU, samples big enough."""
    if torch.compiler.is_compiling() or t.device.type != "cpu":
        return False
    batch = t.shape[batch_dim]
    return 0 < batch <= _MAX_LOOP_BATCH and t.numel() // batch >= _MIN_LOOP_SAMPLE


# Eager CPU runs one fused kernel per sample, reading the partner where it lies (no gathered copy,
# no scatter-add in the backward); a kernel launch costs microseconds, so only for batches of
# samples big enough. Measured in benchmarks/mix_floor.py.
_MAX_LOOP_BATCH = 1024
_MIN_LOOP_SAMPLE = 4096


def _lerp_into(out: Tensor, h: Tensor, perm: Tensor, lam: Tensor, batch_dim: int) -> Tensor:
    """``out = lerp(h[perm], h, lam)``: one pass per sample on CPU, else gather then lerp."""
    if _sample_slices(h, batch_dim):
        partners = perm.tolist()
        weights = lam.tolist() if lam.dim() else [lam.item()] * len(partners)
        for i, (p, w) in enumerate(zip(partners, weights)):
            torch.lerp(h.select(batch_dim, p), h.select(batch_dim, i), w, out=out.select(batch_dim, i))
        return out
    partner = h.index_select(batch_dim, perm)
    weight = lam_view(lam, h, batch_dim)
    if torch.compiler.is_compiling():
        return torch.lerp(partner, h, weight)
    return torch.lerp(partner, h, weight, out=out)


def _cut_into(out: Tensor, h: Tensor, perm: Tensor, box: Tensor, batch_dim: int) -> Tensor:
    """``out = h`` outside ``box`` and ``h[perm]`` inside: one pass per sample on CPU.

    The CPU pass is ``lerp(h[i], h[perm[i]], mask)`` with a 0/1 float mask, which equals the
    ``where`` for finite values (up to the sign of a zero) and runs at ``lerp``'s vectorised speed,
    about 2.5x faster than CPU ``where`` (benchmarks/mix_floor.py); a non-finite value outside the
    box then spreads to its partner (0 * inf), where it has already broken the step.
    """
    spatial = box.shape[0]
    mask = box_mask(box, h.shape[-spatial:], device=h.device)
    if _sample_slices(h, batch_dim):
        weight = mask.to(h.dtype)
        for i, p in enumerate(perm.tolist()):
            torch.lerp(h.select(batch_dim, i), h.select(batch_dim, p), weight, out=out.select(batch_dim, i))
        return out
    partner = h.index_select(batch_dim, perm)
    if torch.compiler.is_compiling():
        return torch.where(mask, partner, h)
    return torch.where(mask, partner, h, out=out)


class _PermutationMix(torch.autograd.Function):
    """``mix`` with the backward of a permutation: a gather by the inverse permutation.

    Autograd's backward of ``h.index_select(0, perm)`` is an ``index_add`` (a scatter-add into
    zeros); for a permutation the same gradient is ``grad.index_select(0, argsort(perm))``, and
    for mixup and cutmix the whole backward is the forward mix again with the inverse permutation
    (per-sample lam: the partner's weight is gathered too).
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, lam: Tensor, perm: Tensor, box: Tensor | None, batch_dim: int) -> Tensor:
        out = torch.empty_like(h)
        ctx.batch_dim = batch_dim
        ctx.layout = (tuple(out.shape), tuple(out.stride()))
        ctx.save_for_backward(lam, perm, box)
        if box is None:
            return _lerp_into(out, h, perm, lam, batch_dim)
        return _cut_into(out, h, perm, box, batch_dim)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        lam, perm, box = ctx.saved_tensors
        inv = _inverse(perm)
        d = ctx.batch_dim
        if torch.compiler.is_compiling():
            out = grad  # unused: the compiled path builds new tensors
        else:
            out = torch.empty_strided(*ctx.layout, dtype=grad.dtype, device=grad.device)
        if box is not None:
            return _cut_into(out, grad, inv, box, d), None, None, None, None
        if lam.dim() == 0:
            return _lerp_into(out, grad, inv, lam, d), None, None, None, None
        # Per sample: d out[i] / d h[j] is lam[j] for i = j and 1 - lam[i] for perm[i] = j.
        partner_weight = 1 - lam.float().index_select(0, inv)
        if _sample_slices(grad, d):
            for j, (i, a, b) in enumerate(zip(inv.tolist(), lam.tolist(), partner_weight.tolist())):
                torch.mul(grad.select(d, j), a, out=out.select(d, j)).add_(grad.select(d, i), alpha=b)
            return out, None, None, None, None
        own = grad * lam_view(lam, grad, d)
        return torch.addcmul(own, grad.index_select(d, inv), lam_view(partner_weight, grad, d)), None, None, None, None


def mix(h: Tensor, lam: Tensor, perm: Tensor, *, batch_dim: int = 0, box: Tensor | None = None) -> Tensor:
    """Mix one tensor with its batch partners.

    ``mixup``: ``lam * h + (1 - lam) * h[perm]`` (lam broadcast per sample when it is a vector),
    computed as ``torch.lerp(h[perm], h, lam)``. ``cutmix`` (``box`` given): the partner's values
    inside the box, ``h`` outside; the box covers the last ``S`` dimensions of ``h`` (its spatial
    dimensions, ``S = box.shape[0]``).

    The result keeps ``h``'s dtype and memory format (``channels_last``, ``channels_last_3d``),
    and so does its gradient: lam is cast to ``h``'s dtype first, so mixing under autocast does not
    promote bf16/fp16 states. The backward is a gather by the inverse permutation, not autograd's
    scatter-add; on CPU each sample is one fused pass that reads its partner in place. A ``lam``
    that requires grad takes the plain autograd formula.
    """
    if h.dim() <= batch_dim or h.dim() < -batch_dim:
        raise ValueError(
            f"batch_dim={batch_dim} is out of range for a tensor of shape {tuple(h.shape)}; received "
            f"a {h.dim()}-d tensor. Pass the dimension that indexes samples (0 for (B, ...))."
        )
    batch_dim %= h.dim()
    perm = perm.to(h.device)
    if box is not None:
        spatial = box.shape[0]
        if h.dim() < spatial + 2:
            raise ValueError(
                f"cutmix needs a state of shape (B, C, *spatial) with {spatial} spatial dims; received a "
                f"tensor of shape {tuple(h.shape)}. Use mode='mixup' for this point, or choose points "
                "with a spatial layout (convolutional stages)."
            )
    if lam.requires_grad or not h.is_floating_point():
        partner = _take(h, batch_dim, perm)
        if box is None:
            return torch.lerp(partner, h, lam_view(lam, h, batch_dim))
        return torch.where(box_mask(box, h.shape[-box.shape[0]:], device=h.device), partner, h)
    lam = lam.to(dtype=h.dtype, device=h.device)
    return _PermutationMix.apply(h, lam, perm, box, batch_dim)


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
