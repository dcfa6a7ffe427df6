"""torch.compile: a mixed timm ResNet compiles without graph breaks; new lam/perm never recompile;
a new point compiles once. The eager backend is enough to count Dynamo's graphs and breaks."""

import timm
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from mmix_applied import ManifoldMixup, MixPlan


def test_compiled_mixed_resnet_has_no_graph_break_and_recompiles_once_per_point():
    torch._dynamo.reset()
    counters.clear()
    model = timm.create_model("test_resnet", num_classes=5).train()
    mixer = ManifoldMixup(model, seed=0)
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(4, 3, 32, 32)

    def graphs():
        return counters["stats"]["unique_graphs"]

    def run(point, lam, perm):
        with mixer.apply(MixPlan(point, torch.tensor(lam), torch.tensor(perm))):
            return compiled(x)

    out = run("layer2", 0.3, [1, 0, 3, 2])
    assert dict(counters["graph_break"]) == {}
    first = graphs()
    run("layer2", 0.8, [2, 3, 0, 1])
    run("layer2", 0.1, [3, 2, 1, 0])
    assert graphs() == first, "new lam/perm must not recompile"
    run("layer1", 0.5, [1, 0, 3, 2])
    assert graphs() == first + 1, "a new point compiles once"
    run("layer1", 0.6, [0, 1, 3, 2])
    run("layer2", 0.6, [0, 1, 3, 2])
    assert graphs() == first + 1
    assert dict(counters["graph_break"]) == {}
    # The compiled mixed output is the eager mixed output.
    with mixer.apply(MixPlan("layer2", torch.tensor(0.3), torch.tensor([1, 0, 3, 2]))):
        eager = model(x)
    assert (out - eager).abs().max() < 1e-5
    torch._dynamo.reset()
