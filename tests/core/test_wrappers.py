"""Wrapped models: ManifoldMixup(ddp_model) and ManifoldMixup(torch.compile(model)) trace
and mix the module inside (an smp Unet's skips stay mixed with points='auto') and call through
the wrapper; mixer(x) on a module that a training DDP wrapper wraps is refused with the fix."""

import pytest
import segmentation_models_pytorch as smp
import torch
import torch._dynamo
import torch.distributed as dist
from torch import nn
from torch._dynamo.utils import counters
from torch.nn.parallel import DistributedDataParallel as DDP

from mmix_applied import ManifoldMixup, MixPlan
from tests.helpers.reference_models import mixf, smp_unet_reference


def _unet() -> nn.Module:
    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(8, 8, 8), classes=2).train()


@pytest.fixture
def gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_mixer_made_from_ddp_mixes_the_inner_unet_skips_and_calls_through_ddp(gloo_group):
    unet = _unet()
    auto = ManifoldMixup(unet, seed=0).points
    ManifoldMixup.attached(unet).close()
    ddp = DDP(unet, find_unused_parameters=True)  # smp keeps the unused deeper ResNet stages at depth 3
    mixer = ManifoldMixup(ddp, seed=0)
    assert mixer.model is unet and mixer.caller is ddp and ManifoldMixup.attached(ddp) is mixer
    assert mixer.trace_error is None and mixer.points == auto
    through = []
    ddp.register_forward_pre_hook(lambda module, args: through.append(1))
    x = torch.randn(2, 3, 32, 32)
    seen = set()
    while len(seen) < len(mixer.points):
        out, plan = mixer(x)
        seen.add(plan.point)
        want = smp_unet_reference(unet, x, plan.point, plan.lam, plan.perm)
        assert (out - want).abs().max() < 1e-4, plan.point
        out.sum().backward()  # DDP's contract: a backward after each forward
    assert len(through) >= len(mixer.points), "every mixed call went through the DDP wrapper"
    assert unet.encoder.conv1.weight.grad.abs().sum() > 0


def test_mixer_on_the_inner_module_refuses_a_call_that_bypasses_ddp(gloo_group):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).train()
    mixer = ManifoldMixup(net, points=["1"], seed=0)
    ddp = DDP(net)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"bypasses DDP.*ManifoldMixup\(ddp_model"):
        mixer(x)
    ddp.eval()  # no gradient sync to miss: eval calls pass (and run unmixed)
    assert mixer(x)[1] is None
    ddp.train()
    plan = MixPlan("1", torch.tensor(0.3), torch.tensor([1, 2, 0]))
    with mixer.apply(plan):  # the documented fix: draw the plan, call the wrapper
        out = ddp(x)
    assert (out - net[2](mixf(net[1](net[0](x)), plan.lam, plan.perm))).abs().max() < 1e-6


def test_mixer_without_a_process_group_does_not_look_for_ddp():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).train()
    mixer = ManifoldMixup(net, points=["0"], seed=0)
    assert mixer(torch.randn(2, 4))[1] is not None


def test_mixer_made_from_a_compiled_model_mixes_the_module_inside_through_the_compiled_call():
    torch._dynamo.reset()
    counters.clear()
    unet = _unet()
    compiled = torch.compile(unet, backend="eager")
    mixer = ManifoldMixup(compiled, points=["encoder.layer2"], seed=0)  # one point: one compile
    assert mixer.model is unet and mixer.caller is compiled and mixer.trace_error is None
    x = torch.randn(2, 3, 32, 32)
    for point in mixer.points:
        drawn = mixer.sample(2)
        plan = MixPlan(point, drawn.lam, drawn.perm)
        with mixer.apply(plan):
            out = compiled(x)
        assert (out - smp_unet_reference(unet, x, point, plan.lam, plan.perm)).abs().max() < 1e-5
    out, plan = mixer(x)
    assert plan is not None and counters["frames"]["ok"] >= 1, "mixer(x) ran the compiled wrapper"
    assert dict(counters["graph_break"]) == {}
    torch._dynamo.reset()


@pytest.mark.parametrize("version", ["fsdp1", "fully_shard"])
def test_fsdp_wrapped_models_mix_the_module_inside(gloo_group, version):
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).train()
    reference = [layer.weight.detach().clone() for layer in (net[0], net[2])], [net[0].bias.detach().clone(),
                                                                              net[2].bias.detach().clone()]
    if version == "fsdp1":
        model = FullyShardedDataParallel(net, device_id=torch.device("cpu"))
    else:
        model = fully_shard(net)  # FSDP2 shards in place: the model is still the module
    mixer = ManifoldMixup(model, points=["1"], seed=0)
    assert mixer.model is net and mixer.trace_error is None
    x = torch.randn(3, 4)
    out, plan = mixer(x)
    (w0, w2), (b0, b2) = reference
    hidden = mixf(torch.relu(x @ w0.T + b0), plan.lam, plan.perm)
    assert (out - (hidden @ w2.T + b2)).abs().max() < 1e-5
    out.sum().backward()
