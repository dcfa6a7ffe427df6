"""The scripts under examples/ run as users run them (a subprocess, tiny options), and the claims
docs/integrations.md makes about timm's losses hold against timm's own code."""

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _epochs(out: str, metric: str) -> list[tuple[float, float]]:
    rows = re.findall(rf"^epoch \d+ train_loss (\S+) {metric} (\S+)$", out, flags=re.M)
    return [(float(a), float(b)) for a, b in rows]


def test_plain_loop_with_a_timm_model():
    out = _run("plain_loop.py", "--model", "test_resnet", "--epochs", "1", "--limit", "64", "--batch-size", "16")
    assert "mix points ['input', 'layer1', 'layer2']" in out
    (loss, accuracy), = _epochs(out, "val_accuracy")
    assert 0.0 < loss < 10.0 and 0.0 <= accuracy <= 1.0


def test_monai_loop_mixes_every_skip():
    out = _run("monai_loop.py", "--size", "16", "--volumes", "4", "--epochs", "1", "--channels", "4", "8", "16")
    assert "['input', 'model.0', 'model.1.submodule.0', 'model.1.submodule.1.submodule'] via traced graph" in out
    (loss, dice), = _epochs(out, "val_dice")
    assert 0.0 < loss < 10.0 and 0.0 <= dice <= 1.0


def test_soft_target_cross_entropy_on_mixed_targets_is_the_adapter_loss():
    """``SoftTargetCrossEntropy(out, adapter.mix_targets(y, plan))`` is the loss the adapter computes, and
    with no mixing it is timm's ``LabelSmoothingCrossEntropy`` on the class indices."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    from mmix_applied import MixPlan
    from mmix_applied.adapters import Classification

    out, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    adapter = Classification(5, label_smoothing=0.1)
    plan = MixPlan(point="input", lam=torch.tensor(0.3), perm=torch.tensor([5, 4, 3, 2, 1, 0]), box=None)
    mixed = SoftTargetCrossEntropy()(out, adapter.mix_targets(y, plan))
    assert torch.allclose(mixed, adapter.loss(out, y, plan))
    identity = MixPlan(point="input", lam=torch.tensor(1.0), perm=torch.arange(6), box=None)
    plain = SoftTargetCrossEntropy()(out, adapter.mix_targets(y, identity))
    assert torch.allclose(plain, LabelSmoothingCrossEntropy(smoothing=0.1)(out, y))
    assert not torch.allclose(mixed, plain)


def test_label_smoothing_cross_entropy_rejects_soft_targets():
    from timm.loss import LabelSmoothingCrossEntropy

    with pytest.raises(RuntimeError, match="int64"):
        LabelSmoothingCrossEntropy(smoothing=0.1)(torch.randn(4, 5), torch.full((4, 5), 0.2))


def test_train_py_recipe_with_ema_channels_last_bf16_and_accumulation():
    """The lines docs/integrations.md adds to timm's train.py, with the options it names."""
    import timm
    from timm.loss import SoftTargetCrossEntropy
    from timm.utils import ModelEmaV3

    from mmix_applied import ManifoldMixup
    from mmix_applied.adapters import Classification

    model = timm.create_model("test_resnet", num_classes=5).to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=0.5)  # copied before the mixer exists: an ordinary timm model
    mixer = ManifoldMixup(model, alpha=2.0, seed=0)
    adapter = Classification(5, label_smoothing=0.1)
    criterion, optimizer, accum_steps = SoftTargetCrossEntropy(), torch.optim.SGD(model.parameters(), lr=0.1), 2
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1, 2, 3])
    ema_before = ema.module.fc.weight.detach().clone()
    for step in range(2 * accum_steps):
        plan = mixer.sample(x.shape[0], x.device, input_shape=x.shape)
        target = adapter.mix_targets(y, plan)
        with mixer.apply(plan), torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(x)
        assert output.dtype == torch.bfloat16
        (criterion(output, target) / accum_steps).backward()
        if (step + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
            ema.update(model)
    assert not torch.equal(ema.module.fc.weight, ema_before)
    assert "forward" not in vars(ema.module)  # the EMA copy carries no routing of the mixer
    model.eval()
    with torch.no_grad():  # eval mode never mixes, inside apply or not
        plain = model(x)
        with mixer.apply(mixer.sample(4)):
            assert torch.equal(model(x), plain)


def _weights_line(out: str) -> str:
    (line,) = re.findall(r"^weights_sum \S+ mixer_draws \S+$", out, flags=re.M)
    return line


def test_lightning_module_resumes_exactly_with_the_mixer_checkpoint(tmp_path):
    """A run stopped after epoch 1 and resumed ends with the straight run's weights and mixer state; without
    ``MixerCheckpoint`` (the control) the resumed run draws other plans and ends elsewhere."""
    tiny = ("--limit", "160", "--batch-size", "32")
    straight = _weights_line(_run("lightning_module.py", "--epochs", "2", "--out", str(tmp_path / "a"), *tiny))
    _run("lightning_module.py", "--epochs", "1", "--out", str(tmp_path / "b"), *tiny)
    resumed = _weights_line(_run("lightning_module.py", "--epochs", "2", "--out", str(tmp_path / "b"), "--resume",
                                 *tiny))
    assert resumed == straight
    _run("lightning_module.py", "--epochs", "1", "--out", str(tmp_path / "c"), "--no-mixer-checkpoint", *tiny)
    control = _weights_line(_run("lightning_module.py", "--epochs", "2", "--out", str(tmp_path / "c"), "--resume",
                                 "--no-mixer-checkpoint", *tiny))
    assert control != straight
