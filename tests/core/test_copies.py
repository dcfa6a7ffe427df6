"""Copies of a mixed model are plain models: deepcopy (timm ModelEmaV3), pickle and
torch.save made while a mixer is attached give a model whose forward is its class's own, so
torch.export and torch.jit.script work and the pickle loads where mmix_applied cannot be imported."""

import copy
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from mmix_applied import ManifoldMixup, MixPlan
from tests.helpers.reference_models import mixf

LAM = torch.tensor(0.3)
PERM = torch.tensor([1, 2, 0])


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).train()


class _Branchy(nn.Module):
    """Untraceable by fx (data-dependent branch): the mixer falls back to a forward hook."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x)
        if bool(h.sum() > 1e9):
            h = h * 0
        return self.head(h)


def _is_plain(module: nn.Module) -> bool:
    return all("forward" not in m.__dict__ and "__getstate__" not in m.__dict__ and not m._forward_hooks
               for m in module.modules())


def test_deepcopy_and_pickle_give_plain_models_and_the_original_still_mixes():
    net = _net()
    mixer = ManifoldMixup(net, points=["1"], seed=0)
    x = torch.randn(3, 4)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert _is_plain(clone)
        assert type(clone).forward is nn.Sequential.forward and clone.forward.__func__ is nn.Sequential.forward
        with mixer.apply(MixPlan("1", LAM, PERM)):  # the copy never mixes, even inside apply
            assert torch.equal(clone(x), net[2](net[1](net[0](x))))
    with mixer.apply(MixPlan("1", LAM, PERM)):  # the original is still routed
        got = net(x)
    assert (got - net[2](mixf(net[1](net[0](x)), LAM, PERM))).abs().max() < 1e-6
    mixer.close()
    assert _is_plain(net)


def test_copies_of_a_hook_mixed_model_leave_the_hook_out():
    net = _Branchy().train()
    with pytest.warns(UserWarning, match="could not be traced"):
        mixer = ManifoldMixup(net, points=["block"], seed=0)
    assert net.block._forward_hooks  # the fallback hook is on the original
    clone = copy.deepcopy(net)
    assert _is_plain(clone)
    x = torch.randn(3, 4)
    with mixer.apply(MixPlan("block", LAM, PERM)):
        assert torch.equal(clone(x), clone.head(clone.block(x)))
    mixer.close()
    assert _is_plain(net)


def test_a_copy_exports_and_scripts_like_the_plain_model():
    net = _net()
    ManifoldMixup(net, points=["1"], seed=0)
    clone = copy.deepcopy(net).eval()
    x = torch.randn(3, 4)
    exported = torch.export.export(clone, (x,))
    assert torch.allclose(exported.module()(x), clone(x))
    scripted = torch.jit.script(clone)
    assert torch.allclose(scripted(x), clone(x))
    branchy = _Branchy().train()
    with pytest.warns(UserWarning):
        ManifoldMixup(branchy, points=["block"], seed=0)
    assert torch.allclose(torch.jit.script(copy.deepcopy(branchy))(x), branchy(x))


def test_a_saved_mixed_model_loads_where_mmix_applied_cannot_be_imported(tmp_path):
    net = _net()
    ManifoldMixup(net, points=["1"], seed=0)
    x = torch.randn(3, 4)
    torch.save({"model": net, "x": x, "want": net(x)}, tmp_path / "model.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["mmix_applied"] = None  # importing it (or any submodule) now raises ImportError
        import torch
        saved = torch.load({str(tmp_path / "model.pt")!r}, weights_only=False)
        model = saved["model"]
        assert "forward" not in model.__dict__, model.__dict__.keys()
        assert torch.equal(model(saved["x"]), saved["want"])
        print("loaded", type(model).__name__)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded Sequential" in done.stdout


def test_a_deep_copied_module_holding_the_mixer_gets_its_own_attached_mixer():
    holder = nn.Module()
    holder.net = _net()
    holder.mixer = ManifoldMixup(holder.net, points=["1"], seed=0)
    holder.mixer.sample(3)
    clone = copy.deepcopy(holder)
    assert clone.mixer is not holder.mixer and clone.mixer.model is clone.net
    assert ManifoldMixup.attached(clone.net) is clone.mixer and ManifoldMixup.attached(holder.net) is holder.mixer
    assert torch.equal(clone.mixer.generator.get_state(), holder.mixer.generator.get_state())
    x = torch.randn(3, 4)
    out, plan = clone.mixer(x)
    net = clone.net
    assert (out - net[2](mixf(net[1](net[0](x)), plan.lam, plan.perm))).abs().max() < 1e-6
