"""torch.compile, the core's part: a compiled mixed forward and a compiled mixed step have no
graph break in the core, never recompile on a new lam/perm/box, compile once per point and never
fall back to eager, whatever the number of points. Graph breaks and recompiles are Dynamo's, so
the ``eager`` backend is enough to count them (and keeps the CPU compile short)."""

import gc

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch._dynamo
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch._dynamo.utils import counters

from mmix_applied import ManifoldMixup, MixPlan
from mmix_applied.models import create_model

# More points than Dynamo's default recompile_limit (8): the ninth used to run eager, silently.
RESNET_POINTS = ["input", "conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _no_break_no_fallback() -> None:
    assert dict(counters["graph_break"]) == {}
    assert not any("recompile limit" in key for key in counters["unimplemented"]), dict(counters["unimplemented"])
    assert counters["frames"]["total"] == counters["frames"]["ok"], dict(counters["frames"])


def _plan(mixer: ManifoldMixup, point: str, x: torch.Tensor) -> MixPlan:
    """A fresh draw (new lam, perm, box) forced to ``point``."""
    drawn = mixer.sample(x.shape[0], input_shape=tuple(x.shape))
    return MixPlan(point, drawn.lam, drawn.perm, drawn.box)


def test_compiled_resnet_with_nine_points_compiles_each_point_once_and_never_runs_eager():
    model = timm.create_model("test_resnet", num_classes=5).train()
    gc.collect()  # earlier tests' unclosed mixers give their budget back now, not in the middle of this test
    limit = torch._dynamo.config.recompile_limit
    mixer = ManifoldMixup(model, points=RESNET_POINTS, seed=0)
    assert torch._dynamo.config.recompile_limit == limit + len(RESNET_POINTS) + 1
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(4, 3, 16, 16)
    for point in RESNET_POINTS:
        with mixer.apply(_plan(mixer, point, x)):
            compiled(x)
    assert _graphs() == len(RESNET_POINTS), "one graph per point"
    for point in RESNET_POINTS:  # new lam and perm at every point: no recompile, and the compiled output is right
        plan = _plan(mixer, point, x)
        with mixer.apply(plan):
            got = compiled(x)
            want = model(x)  # eager, the same plan (BN batch statistics only: the same output)
        assert (got - want).abs().max() < 1e-5, point
    assert _graphs() == len(RESNET_POINTS), "new lam/perm must not recompile"
    _no_break_no_fallback()
    mixer.close()
    assert torch._dynamo.config.recompile_limit == limit, "close() gives the raised limit back"
    mixer.sample(4)  # a closed mixer does not take it again
    assert torch._dynamo.config.recompile_limit == limit


def _step_checks(model, mixer, points, x, loss_of, *, rounds: int = 2) -> None:
    """Whole step (apply + forward + loss) compiled; backward outside. Each point once, then no more."""

    @torch.compile(backend="eager")
    def step(x, plan):
        with mixer.apply(plan):
            out = model(x)
        return loss_of(out, plan)

    per_round = []
    for _ in range(rounds):
        for point in points:
            loss = step(x, _plan(mixer, point, x))
            loss.backward()
            assert torch.isfinite(loss)
        per_round.append(_graphs())
    assert per_round[0] == len(points) and per_round[-1] == per_round[0], per_round
    _no_break_no_fallback()


def _ce(y):
    def loss(out, plan):
        return plan.lam * F.cross_entropy(out, y) + (1 - plan.lam) * F.cross_entropy(out, y[plan.perm])
    return loss


def test_compiled_step_smp_unet_cutmix_has_no_break_and_new_boxes_do_not_recompile():
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(8, 8, 8), classes=3).train()
    mixer = ManifoldMixup(model, points=["input", "encoder.layer2"], mode="cutmix", seed=0)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    _step_checks(model, mixer, mixer.points, x, _ce(y))


def test_compiled_step_monai_unet_3d_has_no_break():
    torch.manual_seed(0)
    model = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2)).train()
    mixer = ManifoldMixup(model, points=["input", "model.0", "model.1.submodule.0"], seed=0)
    x, y = torch.randn(2, 1, 16, 16, 16), torch.randint(0, 2, (2, 16, 16, 16))
    _step_checks(model, mixer, mixer.points, x, _ce(y))


def test_compiled_step_crnn_has_no_break():
    torch.manual_seed(0)
    model = create_model("crnn", "crnn", num_classes=6, in_channels=1, hidden_size=8, cnn_widths=(4, 8, 8, 8)).train()
    mixer = ManifoldMixup(model, points=["input", "backbone.stage2", "rnn"], seed=0)
    x, y = torch.randn(2, 1, 32, 40), torch.randint(0, 6, (2,))

    def loss(out, plan):  # out: (T, B, C) log-probs; a per-sequence NLL stands in for CTC here
        return _ce(y)(out.mean(0), plan)

    # Dynamo breaks the graph at any nn.LSTM unless allow_rnn is set (the plain model too): not the core's.
    with torch._dynamo.config.patch(allow_rnn=True):
        _step_checks(model, mixer, mixer.points, x, loss)


@pytest.mark.slow
def test_whole_step_with_backward_inside_compiles_once_per_point():
    """mixer.sample outside; apply, forward, loss and backward inside one compiled function."""
    model = timm.create_model("test_resnet", num_classes=5).train()
    mixer = ManifoldMixup(model, points=RESNET_POINTS[:9], seed=0)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    loss_of = _ce(y)

    @torch.compile(backend="eager")
    def step(x, plan):
        with mixer.apply(plan):
            out = model(x)
        loss = loss_of(out, plan)
        loss.backward()
        return loss.detach()

    F.cross_entropy(model(x), y).backward()  # every .grad exists from the first compiled step on
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        counts = []
        for _ in range(2):
            for point in mixer.points:
                step(x, _plan(mixer, point, x))
            counts.append(_graphs())
    assert counts == [len(mixer.points)] * 2, counts
    _no_break_no_fallback()
