"""Every adapter's loss and mix_targets compile with no graph break; a new lam/perm does not recompile.

``fullgraph=True`` makes any graph break an error; the eager backend is enough to count Dynamo's
frames. Plans come from a real mixer; the compiled value is compared with the eager one.
"""

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from mmix_applied import ManifoldMixup
from mmix_applied.adapters import CTC, Classification, MultiLabel, Regression, Segmentation
from mmix_applied.adapters.ctc import ctc_per_sample

B = 4


def _plans(spatial=2, **options):
    """Two plans with different lam and perm from one seeded mixer (cutmix: boxes on an 8^S grid)."""
    model = nn.Conv2d(1, 1, 1) if spatial == 2 else nn.Conv3d(1, 1, 1)
    mixer = ManifoldMixup(model, points=["input"], seed=0, **options)
    shape = (B, 1) + (8,) * spatial
    first = mixer.sample(B, input_shape=shape)
    for _ in range(20):
        second = mixer.sample(B, input_shape=shape)
        if not torch.equal(second.perm, first.perm) and float((second.lam - first.lam).abs().max()) > 1e-3:
            return first, second
    raise AssertionError("the mixer drew the same perm or lam 20 times")


def _seg(mode, C, spatial, ignore):
    S = (8,) * spatial
    out = torch.randn(B, C, *S)
    if mode == "multilabel":
        mask = torch.randint(0, 2, (B, C, *S))
    else:
        mask = torch.randint(0, C if mode == "multiclass" else 2, (B, *S))
    if ignore:
        mask[:, ..., 0] = 255
    return Segmentation(C, mode=mode, ignore_index=255 if ignore else None), out, mask


def _cases():
    y = torch.tensor([0, 3, 4, 1])
    yield "classification-index", Classification(5), torch.randn(B, 5), y, {}
    yield "classification-smoothing", Classification(5, label_smoothing=0.1), torch.randn(B, 5), y, {}
    yield "classification-soft", Classification(5), torch.randn(B, 5), torch.softmax(torch.randn(B, 5), 1), {}
    yield "classification-per-sample-lam", Classification(5), torch.randn(B, 5), y, {"lam_per_sample": True}
    yield "multilabel", MultiLabel(3), torch.randn(B, 3), torch.randint(0, 2, (B, 3)), {}
    yield "regression", Regression(), torch.randn(B, 2), torch.randn(B, 2), {}
    yield "regression-dense-cutmix", Regression("l1"), torch.randn(B, 1, 8, 8), torch.randn(B, 1, 8, 8), \
        {"mode": "cutmix"}
    for spatial in (2, 3):
        for mode, C in (("multiclass", 3), ("binary", 1), ("multilabel", 2)):
            for ignore in (False, True):
                seg, out, mask = _seg(mode, C, spatial, ignore)
                yield f"segmentation-{spatial}d-{mode}-ignore{ignore}", seg, out, mask, {"spatial": spatial}
        seg, out, mask = _seg("multiclass", 3, spatial, True)
        yield f"segmentation-{spatial}d-cutmix", seg, out, mask, {"spatial": spatial, "mode": "cutmix"}


#: Cases the fast suite runs (each compiles in about a second); the rest run with the slow marker.
FAST = {"classification-index", "classification-smoothing", "classification-soft", "multilabel", "regression",
        "segmentation-2d-multiclass-ignoreTrue", "segmentation-3d-multiclass-ignoreFalse",
        "segmentation-2d-binary-ignoreFalse", "segmentation-3d-multilabel-ignoreTrue"}
CASES = [pytest.param(*case, id=case[0], marks=() if case[0] in FAST else pytest.mark.slow) for case in _cases()]


def _compile_twice(fn, first_args, second_args):
    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("eager")
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    results = [compiled(*first_args), compiled(*second_args)]
    assert dict(counters["graph_break"]) == {}
    assert backend.frame_count == 1, "a new lam/perm must not recompile"
    torch._dynamo.reset()
    return results


@pytest.mark.parametrize("name, adapter, output, target, options", CASES)
def test_loss_and_mix_targets_compile_without_graph_break(name, adapter, output, target, options):
    options = dict(options)
    plans = _plans(options.pop("spatial", 2), **options)
    got = _compile_twice(adapter.loss, (output, target, plans[0]), (output, target, plans[1]))
    for value, plan in zip(got, plans):
        assert value.item() == pytest.approx(adapter.loss(output, target, plan).item(), abs=1e-5)
    got = _compile_twice(adapter.mix_targets, (target, plans[0]), (target, plans[1]))
    for value, plan in zip(got, plans):
        assert torch.allclose(value, adapter.mix_targets(target, plan), atol=1e-6)


@pytest.mark.parametrize("per_sample", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_ctc_loss_compiles_without_graph_break_and_its_gradient_is_torchs(per_sample):
    T, C = 12, 6
    targets = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0], [5, 5, 1, 2], [2, 3, 0, 0]])
    lengths = torch.tensor([3, 1, 4, 2])
    logits = torch.randn(T, B, C)
    for plans in [_plans(lam_per_sample=per_sample)]:
        adapter = CTC()

        def step(x, plan):
            x = x.detach().requires_grad_(True)
            loss = adapter.loss(x.log_softmax(-1), (targets, lengths), plan)
            (grad,) = torch.autograd.grad(loss, x)
            return loss, grad

        # aot_eager runs the custom op's autograd formula, as inductor would
        torch._dynamo.reset()
        counters.clear()
        backend = CompileCounterWithBackend("aot_eager")
        compiled = torch.compile(adapter.loss, backend=backend, fullgraph=True)
        for plan in plans:
            x = logits.clone().requires_grad_(True)
            loss = compiled(x.log_softmax(-1), (targets, lengths), plan)
            (grad,) = torch.autograd.grad(loss, x)
            want_loss, want_grad = step(logits, plan)
            assert loss.item() == pytest.approx(want_loss.item(), abs=1e-5)
            assert torch.allclose(grad, want_grad, atol=1e-6)
        assert dict(counters["graph_break"]) == {}
        assert backend.frame_count == 1, "a new lam/perm must not recompile"
        torch._dynamo.reset()


def test_ctc_custom_op_values_and_per_sample_gradients_are_torchs():
    """The op behind the compiled CTC: F.ctc_loss's losses, and its gradient under any sample weights
    (an unalignable sample keeps an infinite loss and a zero gradient, as zero_infinity gives)."""
    T, C = 12, 6
    targets = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0], [5, 5, 1, 2], [2, 3, 0, 0]])
    lengths, out_len = torch.tensor([3, 1, 4, 2]), torch.tensor([12, 12, 3, 9])  # sample 2 cannot align
    log_probs = torch.randn(T, B, C).log_softmax(-1).requires_grad_(True)
    weights = torch.rand(B)
    losses, _ = ctc_per_sample(log_probs, targets, out_len, lengths, 0, True)
    want = F.ctc_loss(log_probs, targets, out_len, lengths, reduction="none")
    assert torch.isinf(losses[2]) and torch.isinf(want[2])
    assert torch.allclose(losses[[0, 1, 3]], want[[0, 1, 3]])
    (got,) = torch.autograd.grad((torch.where(torch.isfinite(losses), losses, 0) * weights).sum(), log_probs)
    zi = F.ctc_loss(log_probs, targets, out_len, lengths, reduction="none", zero_infinity=True)
    (ref,) = torch.autograd.grad((zi * weights).sum(), log_probs)
    assert torch.allclose(got, ref, atol=1e-6) and got[:, 2].abs().max() == 0


def test_compiled_ctc_skips_the_checks_and_zero_infinity_still_zeroes():
    """Under compile an unalignable target gives inf (no sync to raise), or 0 with zero_infinity."""
    log_probs = torch.randn(2, 2, 4).log_softmax(-1)
    target = (torch.tensor([[1, 2, 3], [1, 0, 0]]), torch.tensor([3, 1]))
    torch._dynamo.reset()
    assert torch.isinf(torch.compile(CTC().loss, backend="eager", fullgraph=True)(log_probs, target))
    torch._dynamo.reset()
    got = torch.compile(CTC(zero_infinity=True).loss, backend="eager", fullgraph=True)(log_probs, target)
    with pytest.warns(UserWarning, match="cannot be aligned"):
        assert got.item() == pytest.approx(CTC(zero_infinity=True).loss(log_probs, target).item(), abs=1e-6)
    torch._dynamo.reset()
