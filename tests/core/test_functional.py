"""functional.mix against the plain formula: values, gradients, dtype, memory format, compile.

The reference is written out here: ``lam * h + (1 - lam) * h[perm]`` with the partner gathered by a
Python loop, the cutmix box cut by slicing from the box fractions (pixel centres), and gradients
from autograd of that formula. Both of mix's paths run: one fused pass per sample (eager CPU, big
samples) and the vectorised gather (small samples, GPU, under compile); the tests force each.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend

from mmix_applied.core import functional
from mmix_applied.core.functional import mix


@pytest.fixture(params=["per_sample_pass", "vectorised"])
def path(request, monkeypatch):
    """Force one of mix's two implementations for the whole test."""
    monkeypatch.setattr(functional, "_MIN_LOOP_SAMPLE", 1 if request.param == "per_sample_pass" else 10**12)
    return request.param


def _partner(h: torch.Tensor, perm: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.stack([h.select(dim, int(p)) for p in perm], dim=dim)


def _plain(h, lam, perm, dim=0):
    lam = lam.to(h.dtype)
    if lam.dim():
        shape = [1] * h.dim()
        shape[dim] = -1
        lam = lam.view(shape)
    return lam * h + (1 - lam) * _partner(h, perm, dim)


def _plain_cut(h, perm, box):
    """The box by slicing: pixel i of n is inside when its centre (i + 0.5) / n is in [lo, hi)."""
    out = h.clone()
    partner = _partner(h, perm, 0)
    region = []
    for d, n in enumerate(h.shape[-box.shape[0]:]):
        lo, hi = float(box[d, 0]), float(box[d, 1])
        region.append(slice(math.ceil(lo * n - 0.5), math.ceil(hi * n - 0.5)))
    out[(Ellipsis, *region)] = partner[(Ellipsis, *region)]
    return out


def _case(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randperm(shape[0], generator=g)


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_equals_the_plain_formula_in_float32(path, per_sample):
    h, perm = _case((6, 5, 8, 8))
    lam = torch.rand(6, generator=torch.Generator().manual_seed(1)) if per_sample else torch.tensor(0.3)
    out = mix(h, lam, perm)
    partner = _partner(h, perm, 0)
    weight = lam.view(-1, 1, 1, 1) if per_sample else lam
    assert torch.equal(out, torch.lerp(partner, h, weight))  # the documented lerp, bit for bit
    assert torch.allclose(out, _plain(h, lam, perm), rtol=0, atol=1e-6)


def test_mixup_along_batch_dim_1(path):
    h, _ = _case((7, 4, 300))  # (T, B, D): an LSTM's sequence output
    perm = torch.tensor([2, 0, 3, 1])
    lam = torch.tensor([0.1, 0.5, 0.9, 0.7])
    assert torch.allclose(mix(h, lam, perm, batch_dim=1), _plain(h, lam, perm, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape,box", [
    ((4, 3, 8, 8), [[0.25, 0.75], [0.0, 0.5]]),
    ((4, 2, 4, 8, 8), [[0.5, 1.0], [0.25, 0.5], [0.0, 1.0]]),
    ((4, 3, 8, 8), [[0.5, 0.5], [0.0, 1.0]]),  # an empty box: nothing swapped
])
def test_cutmix_swaps_exactly_the_box(path, shape, box):
    h, perm = _case(shape)
    box = torch.tensor(box)
    out = mix(h, torch.tensor(0.4), perm, box=box)
    assert torch.equal(out, _plain_cut(h, perm, box))


@pytest.mark.parametrize("kind", ["scalar", "per_sample", "cutmix", "batch_dim_1"])
def test_gradient_passes_gradcheck_in_float64(path, kind):
    g = torch.Generator().manual_seed(3)
    shape = (5, 4, 3) if kind == "batch_dim_1" else (4, 2, 3, 3)
    h = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    perm = torch.tensor([2, 0, 3, 1])
    lam = {"per_sample": torch.tensor([0.1, 0.5, 0.9, 0.7]), "batch_dim_1": torch.tensor([0.2, 0.6, 0.3, 0.8])}.get(
        kind, torch.tensor(0.3))
    box = torch.tensor([[0.0, 2 / 3], [1 / 3, 1.0]]) if kind == "cutmix" else None
    dim = 1 if kind == "batch_dim_1" else 0
    assert torch.autograd.gradcheck(lambda x: mix(x, lam, perm, batch_dim=dim, box=box), (h,))


def test_gradient_matches_autograd_of_the_plain_formula(path):
    h, perm = _case((8, 16, 16, 16))
    lam = torch.rand(8, generator=torch.Generator().manual_seed(2))
    grad = torch.randn(h.shape, generator=torch.Generator().manual_seed(4))
    a = h.clone().requires_grad_()
    b = h.clone().requires_grad_()
    mix(a, lam, perm).backward(grad)
    _plain(b, lam, perm).backward(grad)
    assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_mix_keeps_the_state_dtype_forward_and_backward(path, dtype):
    h, perm = _case((4, 3, 8, 8))
    h = h.to(dtype).requires_grad_()
    out = mix(h, torch.tensor(0.3), perm)  # lam in float32: cast to the state's dtype
    assert out.dtype == dtype
    expected = _plain(h.detach(), torch.tensor(0.3), perm)
    assert torch.allclose(out.float(), expected.float(), rtol=0, atol=float(torch.finfo(dtype).eps) * 8)
    out.backward(torch.ones_like(out))
    assert h.grad.dtype == dtype
    # Each sample is its own weight lam plus its inverse partner's 1 - lam: 1 everywhere.
    assert torch.equal(h.grad, torch.ones_like(h.grad))


@pytest.mark.parametrize("fmt,shape", [
    (torch.channels_last, (4, 3, 8, 8)), (torch.channels_last_3d, (4, 2, 4, 8, 8)),
])
@pytest.mark.parametrize("cutmix", [False, True])
def test_mix_keeps_the_memory_format_forward_and_backward(path, fmt, shape, cutmix):
    h, perm = _case(shape)
    h = h.contiguous(memory_format=fmt).requires_grad_()
    box = torch.tensor([[0.25, 0.75]] * (len(shape) - 2)) if cutmix else None
    out = mix(h, torch.tensor(0.3), perm, box=box)
    assert out.is_contiguous(memory_format=fmt)
    expected = _plain_cut(h.detach(), perm, box) if cutmix else _plain(h.detach(), torch.tensor(0.3), perm)
    assert torch.allclose(out, expected, rtol=0, atol=1e-6)
    # A contiguous upstream gradient still comes back in the state's format.
    upstream = torch.randn(shape).contiguous()
    (grad,) = torch.autograd.grad(out, h, upstream)
    assert grad.is_contiguous(memory_format=fmt)
    ref = h.detach().clone().requires_grad_()
    reference = _plain_cut(ref, perm, box) if cutmix else _plain(ref, torch.tensor(0.3), perm)
    reference.backward(upstream)
    assert torch.allclose(grad, ref.grad, rtol=0, atol=1e-6)


def test_a_lam_that_requires_grad_gets_its_gradient():
    h, perm = _case((4, 3, 8, 8))
    lam = torch.tensor(0.3, requires_grad=True)
    mix(h, lam, perm).sum().backward()
    expected = (h - _partner(h, perm, 0)).sum()
    assert torch.allclose(lam.grad, expected, rtol=1e-5, atol=1e-4)


def test_bad_batch_dim_and_cutmix_without_spatial_dims_say_what_was_received():
    h, perm = _case((4, 10))
    with pytest.raises(ValueError, match="batch_dim=2 is out of range.*received"):
        mix(h, torch.tensor(0.5), perm, batch_dim=2)
    with pytest.raises(ValueError, match="cutmix needs a state.*received"):
        mix(h, torch.tensor(0.5), perm, box=torch.tensor([[0.0, 0.5]]))


def test_compiles_with_no_graph_break_and_no_recompile_for_new_lam_or_perm():
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")  # traces the backward too

    def step(h, lam, perm):
        return mix(h, lam, perm).square().sum()

    compiled = torch.compile(step, backend=counter, fullgraph=True)  # fullgraph: a break raises
    h, _ = _case((8, 64, 8, 8))
    for seed, lam in enumerate([0.3, 0.8, 0.1]):
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(seed))
        a = h.clone().requires_grad_()
        b = h.clone().requires_grad_()
        compiled(a, torch.tensor(lam), perm).backward()
        step(b, torch.tensor(lam), perm).backward()
        assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-5)
    assert counter.frame_count == 1
    torch._dynamo.reset()
