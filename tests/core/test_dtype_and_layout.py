"""bf16 autocast and channels_last with mixing: the mix keeps the state's dtype and memory
layout, on a timm classifier, an smp U-Net and a MONAI 3D UNet (a mixed step on CPU)."""

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from monai.networks.nets import UNet

import mmix_applied.core.functional as functional
from mmix_applied import ManifoldMixup, MixPlan
from mmix_applied.engine.performance import convert_memory_format


@pytest.mark.parametrize("fmt, shape", [(torch.channels_last, (4, 6, 5, 7)), (torch.channels_last_3d, (4, 6, 3, 5, 7))])
@pytest.mark.parametrize("box", [False, True])
def test_mix_keeps_dtype_and_layout_and_equals_the_formula(fmt, shape, box):
    torch.manual_seed(0)
    h = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=fmt)
    lam, perm = torch.tensor(0.3), torch.tensor([2, 0, 3, 1])
    spatial = len(shape) - 2
    cut = torch.tensor([[0.0, 0.5]] * spatial) if box else None
    out = functional.mix(h, lam, perm, box=cut)
    assert out.is_contiguous(memory_format=fmt) and out.dtype == h.dtype
    plain = h.contiguous()  # the formula on a contiguous copy: the layout changes nothing but strides
    if box:
        mask = functional.box_mask(cut, shape[2:])
        want = torch.where(mask, plain[perm], plain)
    else:
        w = float(lam)  # lam's float32 value
        want = w * plain + (1 - w) * plain[perm]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    half = functional.mix(h.to(torch.bfloat16), lam, perm, box=cut)
    assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=fmt)


def _cases():
    yield "timm", (lambda: timm.create_model("test_resnet", num_classes=5)), "layer1", (4, 3, 32, 32)
    yield "smp", (lambda: smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(8, 8, 8),
                                   classes=3)), "encoder.layer2", (4, 3, 32, 32)
    # norm="batch": PyTorch's CPU InstanceNorm3d (MONAI's default norm) returns a contiguous tensor
    # from a channels_last_3d one, so with it the state is contiguous before any mixing.
    yield "monai3d", (lambda: UNet(spatial_dims=3, in_channels=2, out_channels=2, channels=(4, 8, 16),
                                   strides=(2, 2), norm="batch")), "model.0", (4, 2, 16, 16, 16)


@pytest.mark.parametrize("family, build, point, shape", list(_cases()), ids=[c[0] for c in _cases()])
def test_mixed_step_in_bf16_autocast_and_channels_last_keeps_both_at_the_cut(monkeypatch, family, build, point,
                                                                           shape):
    torch.manual_seed(0)
    model = convert_memory_format(build().train())
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    mixer = ManifoldMixup(model, points=[point], seed=0)
    states = []
    original = functional.mix

    def recording(h, *args, **kwargs):
        out = original(h, *args, **kwargs)
        states.append((h.dtype, h.is_contiguous(memory_format=fmt), out.dtype, out.is_contiguous(memory_format=fmt)))
        return out

    monkeypatch.setattr(functional, "mix", recording)
    x = convert_memory_format(torch.randn(shape))
    drawn = mixer.sample(shape[0])
    with torch.autocast("cpu", dtype=torch.bfloat16), mixer.apply(MixPlan(point, drawn.lam, drawn.perm, None)):
        out = model(x)
    assert out.dtype == torch.bfloat16
    assert states, "the cut was mixed"
    # every tensor mixed at the cut (the point's output, and in the U-Nets the skips) keeps its dtype
    # (bf16 for what autocast computed, the point's output; smp's encoder also carries the raw float32
    # input across the cut) and the memory layout it reached the mix in
    assert all(before == after and kept == kept_out for before, kept, after, kept_out in states), states
    if len(shape) == 4:
        # 2D: the CPU's conv and batch-norm kernels keep channels_last, so the mixed states are in it. In
        # 3D, whether bf16 conv3d / batch_norm hand back channels_last_3d depends on the CPU (contiguous
        # on an AVX2 EPYC, channels_last_3d on earlier machines): the mix's own 5D layout is checked above
        assert all(kept for _, kept, _, _ in states), states
    assert any(s[0] == torch.bfloat16 for s in states)
    out.float().mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    mixer.close()
