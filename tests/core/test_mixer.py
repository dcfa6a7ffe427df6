"""The mixing core against hand-written forward passes, and its lifecycle."""

import copy

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from monai.networks.nets import UNet
from torch import nn

from mmix_applied import ManifoldMixup, MixPlan
from tests.helpers.reference_models import TinyCRNN, mixf, smp_unet_reference, timm_resnet_reference

LAM = torch.tensor(0.3)


def _resnet():
    return timm.create_model("test_resnet", num_classes=5).train()


def _unet():
    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 4), classes=3).train()


def _max_diff(a, b):
    return (a - b).abs().max().item()


def test_timm_resnet_every_default_point_matches_hand_written_forward():
    m = _resnet()
    mixer = ManifoldMixup(m, points="all", seed=0)
    assert mixer.points == ["input", "act1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(5, 3, 32, 32)
    perm = torch.tensor([2, 0, 4, 1, 3])
    for point in mixer.points:
        with mixer.apply(MixPlan(point, LAM, perm)):
            got = m(x)
        want = timm_resnet_reference(m, x, point, LAM, perm)
        assert _max_diff(got, want) < 1e-5, point
        plain = m(x)  # outside apply the model is untouched
        assert _max_diff(plain, timm_resnet_reference(m, x, None, LAM, perm)) < 1e-5


def test_smp_unet_mixes_every_skip_before_the_cut():
    u = _unet()
    mixer = ManifoldMixup(u, seed=0)
    assert mixer.points == ["input", "encoder.relu", "encoder.layer1", "encoder.layer2"]
    x = torch.randn(3, 3, 64, 64)
    perm = torch.tensor([1, 2, 0])
    for point in mixer.points:
        with mixer.apply(MixPlan(point, LAM, perm)):
            got = u(x)
        want = smp_unet_reference(u, x, point, LAM, perm)
        # float32 through ~20 convolutions: the CPU's kernels differ (2.2e-5 at outputs near 1.6 on an
        # AVX2 EPYC, under 1e-5 on earlier machines); a wrong mix (the test below) differs by > 1e-3
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=lambda m: f"{point}: {m}")


def test_smp_unet_hook_only_on_stage_would_differ():
    """The design's warning, checked: mixing the stage output alone (no skips) gives another result."""
    u = _unet()
    x = torch.randn(2, 3, 64, 64)
    perm = torch.tensor([1, 0])
    mixer = ManifoldMixup(u, points=["encoder.layer2"], seed=0)
    with mixer.apply(MixPlan("encoder.layer2", LAM, perm)):
        consistent = u(x)
    mixer.close()
    handle = u.encoder.layer2.register_forward_hook(lambda m, i, o: mixf(o, LAM, perm))
    stage_only = u(x)
    handle.remove()
    assert _max_diff(consistent, stage_only) > 1e-3


def test_crnn_points_including_the_recurrent_sequence():
    m = TinyCRNN().train()
    mixer = ManifoldMixup(m, seed=0)
    assert mixer.points == ["input", "conv1", "conv2", "rnn"]
    x = torch.randn(3, 1, 16, 24)
    perm = torch.tensor([2, 0, 1])
    for point in mixer.points:
        for lam in (LAM, torch.tensor([0.2, 0.5, 0.9])):
            with mixer.apply(MixPlan(point, lam, perm)):
                got = m(x)
            assert got.shape == (12, 3, 6)
            assert _max_diff(got, m.reference(x, point, lam, perm)) < 1e-5, point


def test_raw_lstm_point_defaults_to_batch_dim_one_for_its_tuple_output():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 3)
            self.head = nn.Linear(3, 2)

        def forward(self, x):  # x: (T, B, 4)
            out, (h, c) = self.rnn(x)
            return self.head(out) + self.head(h[-1])

    net = Net().train()
    mixer = ManifoldMixup(net, points=["rnn"], batch_dims={"input": 1}, seed=0)
    x = torch.randn(5, 3, 4)
    perm = torch.tensor([2, 0, 1])
    with mixer.apply(MixPlan("rnn", LAM, perm)):
        got = net(x)
    out, (h, c) = net.rnn(x)
    want = net.head(mixf(out, LAM, perm, dim=1)) + net.head(mixf(h, LAM, perm, dim=1)[-1])
    assert _max_diff(got, want) < 1e-6


def test_monai_unet_nested_skip_is_mixed():
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2)).train()
    point = "model.1.submodule.0"
    mixer = ManifoldMixup(net, points=["input", "model.0", point], seed=0)
    x = torch.randn(2, 1, 16, 16, 16)
    perm = torch.tensor([1, 0])
    with mixer.apply(MixPlan(point, LAM, perm)):
        got = net(x)
    # Independent pass: the outer skip (output of model.0) crosses the cut, so it is mixed too.
    outer, inner = net.model[0](x), net.model[1]
    down = mixf(inner.submodule[0](outer), LAM, perm)
    deep = inner.submodule[2](inner.submodule[1](down))
    want = net.model[2](torch.cat([mixf(outer, LAM, perm), deep], dim=1))
    assert _max_diff(got, want) < 1e-5


def test_eval_disabled_and_outside_apply_run_untouched():
    m = _resnet()
    mixer = ManifoldMixup(m, seed=0)
    x = torch.randn(4, 3, 32, 32)
    plan = MixPlan("layer1", LAM, torch.tensor([1, 0, 3, 2]))
    m.eval()
    with torch.no_grad():
        want = m(x)
        with mixer.apply(plan):
            assert torch.equal(m(x), want)
        out, got_plan = mixer(x)
        assert got_plan is None and torch.equal(out, want)
    m.train()
    mixer.enabled = False
    out, got_plan = mixer(x)
    assert got_plan is None
    with mixer.apply(plan):
        assert _max_diff(m(x), timm_resnet_reference(m, x, None, LAM, plan.perm)) < 1e-5


def test_prob_zero_never_mixes_and_prob_one_always_does():
    m = _resnet()
    x = torch.randn(2, 3, 32, 32)
    never = ManifoldMixup(m, prob=0.0, seed=0)
    assert all(never(x)[1] is None for _ in range(3))
    never.close()
    always = ManifoldMixup(m, prob=1.0, seed=0)
    assert all(always(x)[1] is not None for _ in range(3))


def test_seeded_mixers_reproduce_plans_and_state_dict_resumes():
    m = _resnet()
    a, b = ManifoldMixup(m, seed=3), ManifoldMixup(_resnet(), seed=3)
    plans_a = [a.sample(4) for _ in range(5)]
    plans_b = [b.sample(4) for _ in range(5)]
    for p, q in zip(plans_a, plans_b):
        assert p.point == q.point and torch.equal(p.lam, q.lam) and torch.equal(p.perm, q.perm)
    state = a.state_dict()
    nxt = [a.sample(4) for _ in range(3)]
    a.load_state_dict(state)
    again = [a.sample(4) for _ in range(3)]
    assert all(p.point == q.point and torch.equal(p.lam, q.lam) and torch.equal(p.perm, q.perm)
               for p, q in zip(nxt, again))


def test_close_leaves_no_hook_and_state_dict_keys_never_change():
    m = _resnet()
    keys = list(m.state_dict())
    mixer = ManifoldMixup(m, seed=0)
    assert list(m.state_dict()) == keys
    assert "forward" in m.__dict__
    mixer.close()
    mixer.close()  # idempotent
    assert "forward" not in m.__dict__
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


class _Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it, so the mixer falls back to hooks."""

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.block(x)
        if h.sum() > 1e9:
            h = h * 0
        return self.head(h)


def test_untraceable_model_falls_back_to_hooks_with_a_warning():
    net = _Branchy().train()
    with pytest.warns(UserWarning, match="could not be traced"):
        mixer = ManifoldMixup(net, points=["input", "block"], seed=0)
    x = torch.randn(3, 4)
    perm = torch.tensor([1, 2, 0])
    with mixer.apply(MixPlan("block", LAM, perm)):
        got = net(x)
    assert _max_diff(got, net.head(mixf(net.block(x), LAM, perm))) < 1e-6
    mixer.close()
    assert all(not mod._forward_hooks for mod in net.modules())


def test_batch_sizes_one_and_odd_and_gradients_reach_layers_before_the_point():
    for batch in (1, 3):
        m = _resnet()
        mixer = ManifoldMixup(m, points="all", seed=0)
        x = torch.randn(batch, 3, 64, 64)  # batch norm in training needs > 1 value per channel
        plan = MixPlan("layer3", torch.tensor(0.4), torch.randperm(batch, generator=torch.Generator().manual_seed(0)))
        with mixer.apply(plan):
            out = m(x)
        out.sum().backward()
        first = next(m.parameters())
        assert first.grad is not None and first.grad.abs().sum() > 0


def test_per_sample_lam_and_convenience_call():
    m = _resnet()
    mixer = ManifoldMixup(m, lam_per_sample=True, seed=0)
    x = torch.randn(4, 3, 32, 32)
    out, plan = mixer(x)
    assert plan.lam.shape == (4,) and plan.perm.shape == (4,)
    with mixer.apply(plan):
        again = m(x)
    assert _max_diff(out, again) < 1e-5  # BN batch stats only: the same plan gives the same output


def test_deepcopy_of_a_mixed_model_runs_its_own_forward():
    m = _resnet()
    mixer = ManifoldMixup(m, seed=0)
    ema = copy.deepcopy(m)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    x = torch.randn(2, 3, 32, 32)
    with mixer.apply(MixPlan("layer1", LAM, torch.tensor([1, 0]))):
        got = ema(x)
    assert _max_diff(got, timm_resnet_reference(ema, x, None, LAM, None)) < 1e-5


def test_cutmix_swaps_the_box_at_the_point_and_lam_is_the_kept_area():
    m = _resnet()
    mixer = ManifoldMixup(m, points=["layer2"], mode="cutmix", seed=0)
    x = torch.randn(2, 3, 64, 64)
    plan = mixer.sample(2, input_shape=x.shape)
    seen = {}
    handle = m.layer3.register_forward_pre_hook(lambda mod, args: seen.setdefault("h", args[0]))
    with mixer.apply(plan):
        m(x)
    handle.remove()
    raw = m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x))))))
    grid = raw.shape[-2:]
    inside = torch.zeros(grid, dtype=torch.bool)
    (r0, r1), (c0, c1) = [(round(float(s) * n), round(float(e) * n)) for (s, e), n in zip(plan.box, grid)]
    inside[r0:r1, c0:c1] = True
    want = torch.where(inside, raw[plan.perm], raw)
    assert _max_diff(seen["h"], want) < 1e-5
    assert float(plan.lam) == pytest.approx(1 - inside.float().mean().item(), abs=1e-6)


def test_autocast_keeps_the_state_dtype():
    m = _resnet()
    mixer = ManifoldMixup(m, points=["layer1"], seed=0)
    dtypes = []
    handle = m.layer2.register_forward_pre_hook(lambda mod, args: dtypes.append(args[0].dtype))
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m(x)
        with mixer.apply(MixPlan("layer1", LAM, torch.tensor([1, 0]))):
            m(x)
    handle.remove()
    assert dtypes[0] == dtypes[1] == torch.bfloat16


def test_bad_arguments_say_what_is_valid():
    m = _resnet()
    for alpha in (0, -1.0, "2"):
        with pytest.raises(ValueError, match="alpha"):
            ManifoldMixup(m, alpha=alpha)
    with pytest.raises(ValueError, match=r"unknown mix point 'layer9'.*Did you mean.*layer"):
        ManifoldMixup(m, points=["layer9"])
    with pytest.raises(ValueError, match="inside point"):
        ManifoldMixup(m, points=["layer1", "layer1.0"])
    with pytest.raises(ValueError, match="mode"):
        ManifoldMixup(m, mode="mixdown")
    with pytest.raises(ValueError, match="points='auto' cannot tell"):
        ManifoldMixup(nn.Sequential(nn.Linear(2, 2)))
    mixer = ManifoldMixup(m, seed=0)
    with pytest.raises(ValueError, match="batch size 3"):
        with mixer.apply(MixPlan("layer1", LAM, torch.tensor([1, 0]))):
            m(torch.randn(3, 3, 32, 32))
    with pytest.raises(ValueError, match="not one of this mixer's points"):
        with mixer.apply(MixPlan("head", LAM, torch.tensor([1, 0]))):
            pass


def test_a_point_called_twice_is_rejected():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(3, 3)

        def forward(self, x):
            return self.block(self.block(x))

    with pytest.raises(ValueError, match="called 2 times"):
        ManifoldMixup(Shared(), points=["block"])


class _Masked(nn.Module):
    """A forward with a flag and an optional tensor argument, like timm ViT's attn_mask."""

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x, scale: float = 1.0, mask=None):
        h = self.block(x) * scale
        if mask is not None:
            h = h * mask
        return self.head(h)


def test_forward_arguments_other_than_the_input_are_honoured_on_mixed_steps():
    net = _Masked().train()
    mixer = ManifoldMixup(net, points=["block"], seed=0)
    x, mask = torch.randn(3, 4), torch.rand(3, 4)
    perm = torch.tensor([2, 0, 1])
    plan = MixPlan("block", LAM, perm)
    for kwargs in ({}, {"scale": 3.0}, {"mask": mask}, {"scale": 0.5, "mask": mask}):
        with mixer.apply(plan):
            got = net(x, **kwargs)
        h = mixf(net.block(x) * kwargs.get("scale", 1.0), LAM, perm)
        want = net.head(h * kwargs["mask"] if "mask" in kwargs else h)
        assert _max_diff(got, want) < 1e-6, kwargs
    with mixer.apply(plan):  # positional arguments too
        assert _max_diff(net(x, 2.0), net.head(mixf(net.block(x) * 2.0, LAM, perm))) < 1e-6


def test_a_module_replaced_after_the_mixer_was_made_is_used():
    m = _resnet()
    mixer = ManifoldMixup(m, seed=0)
    m.reset_classifier(7)  # timm swaps the head module
    x, perm = torch.randn(2, 3, 32, 32), torch.tensor([1, 0])
    with mixer.apply(MixPlan("layer1", LAM, perm)):
        out = m(x)
    assert out.shape == (2, 7)
    assert _max_diff(out, timm_resnet_reference(m, x, "layer1", LAM, perm)) < 1e-5  # the new head, on the mix


def test_closed_mixer_never_returns_a_plan_and_input_batch_dim_is_respected():
    net = _resnet()
    mixer = ManifoldMixup(net, seed=0)
    mixer.close()
    out, plan = mixer(torch.randn(2, 3, 32, 32))
    assert plan is None
    seq = nn.GRU(4, 4).train()  # (T, B, D) input: the batch is dim 1
    mixer = ManifoldMixup(seq, points=["input"], batch_dims={"input": 1}, seed=0)
    out, plan = mixer(torch.randn(7, 3, 4))
    assert plan.batch_size == 3


def test_a_second_mixer_on_one_model_is_refused_and_the_first_can_be_reused_or_closed():
    m = _resnet()
    first = ManifoldMixup(m, points=["layer1"], seed=0)
    with pytest.raises(ValueError, match=r"already has a mixer attached.*ManifoldMixup.attached\(model\).*close\(\)"):
        ManifoldMixup(m, seed=1)
    assert ManifoldMixup.attached(m) is first
    # A setup() that runs twice reuses the first; the model is still routed once.
    again = ManifoldMixup.attached(m) or ManifoldMixup(m, seed=1)
    assert again is first
    x, perm = torch.randn(2, 3, 32, 32), torch.tensor([1, 0])
    with first.apply(MixPlan("layer1", LAM, perm)):
        got = m(x)
    assert _max_diff(got, timm_resnet_reference(m, x, "layer1", LAM, perm)) < 1e-5
    first.close()
    assert ManifoldMixup.attached(m) is None
    second = ManifoldMixup(m, points=["layer2"], seed=1)
    assert ManifoldMixup.attached(m) is second


def test_load_state_dict_takes_a_generator_state_that_is_a_row_of_a_gathered_tensor():
    """A per-rank state gathered into one tensor (all_gather) is a view with a storage offset;
    Generator.set_state reads such a view from its storage's start (a segfault)."""
    a, b = ManifoldMixup(_resnet(), seed=0), ManifoldMixup(_resnet(), seed=5)
    rows = torch.stack([a.state_dict()["generator"], b.state_dict()["generator"]])
    a.load_state_dict({"generator": rows[1]})
    assert torch.equal(a.sample(4).perm, b.sample(4).perm)
