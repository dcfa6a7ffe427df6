"""``optim.fused``: torch's fused update where it exists, the same update as torch's default one."""

from __future__ import annotations

import pytest
import torch

from mmix_applied.config import load_config
from mmix_applied.engine.optim import build_optimizer, fused_supported


def _groups(device: str = "cpu") -> list[dict]:
    torch.manual_seed(0)
    return [{"params": [torch.nn.Parameter(torch.randn(7, 5, device=device)),
                        torch.nn.Parameter(torch.randn(5, device=device))]}]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_auto_is_fused_on_cpu_and_false_is_torchs_default(name):
    auto = build_optimizer(_groups(), load_config(None, [f"optim.name={name}"]).optim)
    plain = build_optimizer(_groups(), load_config(None, [f"optim.name={name}", "optim.fused=false"]).optim)
    assert auto.defaults["fused"] is True
    assert not plain.defaults.get("fused")


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_update_equals_the_foreach_one(name):
    """Five steps of the fused kernel against torch's foreach update on the same gradients."""
    cfgs = {f: load_config(None, [f"optim.name={name}", f"optim.fused={f}", "optim.weight_decay=0.01"]).optim
            for f in ("true", "false")}
    params, opts = {}, {}
    for f, cfg in cfgs.items():
        groups = _groups()
        params[f] = groups[0]["params"]
        opts[f] = build_optimizer(groups, cfg)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=gen) for p in params["true"]]
        for f in cfgs:
            for p, g in zip(params[f], grads):
                p.grad = g.clone()
            opts[f].step()
    assert not torch.equal(params["true"][0], _groups()[0]["params"][0])  # the steps moved the weights
    for a, b in zip(params["true"], params["false"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_true_where_torch_has_no_kernel_says_why_and_auto_falls_back():
    groups = _groups("meta")
    ok, why = fused_supported(groups)
    assert not ok and "'meta'" in why
    with pytest.raises(ValueError, match=r"optim.fused=true: no fused adamw update here.*'meta'.*optim.fused: auto"):
        build_optimizer(groups, load_config(None, ["optim.fused=true"]).optim)
    assert not build_optimizer(_groups("meta"), load_config(None, []).optim).defaults.get("fused")


def test_fused_takes_only_booleans_or_auto():
    with pytest.raises(Exception, match="optim.fused"):
        load_config(None, ["optim.fused=sometimes"])


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_auto_keeps_foreach_where_lightning_cannot_clip_a_fused_optimizer(precision):
    """Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer."""
    cfg = load_config(None, []).optim
    assert not build_optimizer(_groups(), cfg, precision=precision, gradient_clipping=True).defaults.get("fused")
    assert build_optimizer(_groups(), cfg, precision=precision, gradient_clipping=False).defaults["fused"]
    assert build_optimizer(_groups(), cfg, precision="32-true", gradient_clipping=True).defaults["fused"]
    with pytest.raises(ValueError, match="refuses gradient clipping with a fused optimizer"):
        build_optimizer(_groups(), load_config(None, ["optim.fused=true"]).optim, precision=precision,
                        gradient_clipping=True)
