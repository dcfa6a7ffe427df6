"""Issue 22 (round 3), the core: one mixer used from two threads mixes each thread's forward with that
thread's own plan (338 of 400 outputs used the other thread's plan before), and a TorchScript model
(torch.jit.script / torch.jit.trace) is refused with what to do instead (it was an AttributeError
traceback), while a torch.fx GraphModule is mixed as any Python model."""

from __future__ import annotations

import pickle
import threading
import time

import pytest
import torch
from torch import nn

from mmix_applied import ManifoldMixup, MixPlan


class _Pause(nn.Module):
    def forward(self, x):
        return x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pause, self.a, self.b = _Pause(), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(self.pause(x))))


def _expected(model, x, plan):
    h = model.a(x)
    return model.b(torch.relu(plan.lam * h + (1 - plan.lam) * h[plan.perm]))


def test_two_threads_sharing_a_mixer_each_mix_with_their_own_plan():
    model = Net().train()
    mixer = ManifoldMixup(model, points=["a"], seed=0)
    x = torch.randn(6, 8)
    plans = [MixPlan("a", torch.tensor(0.2), torch.tensor([1, 0, 3, 2, 5, 4])),
             MixPlan("a", torch.tensor(0.9), torch.tensor([5, 4, 3, 2, 1, 0]))]
    wrong, unmixed, start = [0, 0], [0, 0], threading.Barrier(2)

    def work(i):
        start.wait()
        for _ in range(100):
            with torch.no_grad(), mixer.apply(plans[i]):
                time.sleep(0.0002)  # the other thread enters and leaves its own block meanwhile
                out = model(x)
            wrong[i] += int((out - _expected(model, x, plans[i])).abs().max() > 1e-5)
        with torch.no_grad():  # outside a block: unmixed, whatever the other thread does
            unmixed[i] = int((model(x) - model.b(torch.relu(model.a(x)))).abs().max() > 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [0, 0] and unmixed == [0, 0]
    assert mixer._active is None  # the main thread never entered a block
    assert pickle.dumps(mixer)  # a mixer still pickles (its per-thread plans are left out)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_model_is_refused_with_what_to_do(how):
    model = Net()
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.zeros(2, 8))
    with pytest.raises(TypeError) as err:
        ManifoldMixup(scripted, points=["a"])
    text = str(err.value)
    assert f"from torch.jit.{how}" in text and "cannot be mixed" in text
    assert "Give ManifoldMixup the Python model before scripting or tracing it" in text
    wrapped = nn.DataParallel(scripted)
    with pytest.raises(TypeError, match="TorchScript"):
        ManifoldMixup(wrapped, points=["a"])


def test_a_torch_fx_graph_module_is_mixed_exactly():
    model = Net().train()
    graph = torch.fx.symbolic_trace(model).train()
    mixer = ManifoldMixup(graph, points=["a"], seed=0)
    x = torch.randn(4, 8)
    plan = MixPlan("a", torch.tensor(0.3), torch.tensor([1, 0, 3, 2]))
    with mixer.apply(plan):
        out = graph(x)
    assert (out - _expected(model, x, plan)).abs().max() < 1e-6
    mixer.close()
