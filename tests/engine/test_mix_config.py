"""The regime knobs of the ``mix`` section: ``warmup_epochs`` (and its resume), ``points: all``
beside the paper-set ``auto``, the RegMixup clean term ``clean_weight``, and their validation."""

import json
import shutil

import pytest
import timm
import torch
import torch.nn.functional as F

from mmix_applied import ManifoldMixup
from mmix_applied.config import ConfigError, load_config
from mmix_applied.engine import MixupModule, build_mixer, fit, load_checkpoint
from mmix_applied.engine.module import mixing_epoch
from mmix_applied.tasks.classification import ClassificationRecipe
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "train.limit_train_batches=2", "train.limit_val_batches=1",
        "data.labels_per_class=2", "data.batch_size=8", "data.eval_batch_size=16", "train.accelerator=cpu",
        "train.devices=1", "train.enable_progress_bar=false", "train.loggers=[]", "scheduler.warmup_epochs=0"]


def _cfg(tmp_path, *extra, name="t"):
    return load_config(CONFIG, [*TINY, f"run.dir={tmp_path}", f"run.name={name}", *extra])


def _mixed_steps(run):
    return json.loads((run / "ranks" / "rank0.json").read_text())["mixed_steps"]


def test_mixing_epoch_schedule():
    got = [mixing_epoch(e, warmup=2, off_last=1, max_epochs=5) for e in range(5)]
    assert got == [False, False, True, True, False]
    assert mixing_epoch(10**6, warmup=1, off_last=3, max_epochs=-1)  # no end: off_last cannot count back


def test_warmup_epochs_do_not_mix_and_a_resume_keeps_the_schedule(tmp_path):
    settings = ["train.max_epochs=2", "mix.warmup_epochs=1", "train.save_top_k=-1"]
    full = fit(_cfg(tmp_path, *settings, name="full"))
    first = full / "checkpoints" / "epoch000.ckpt"
    state = load_checkpoint(first)
    assert state["mmix"]["mixed_steps"] == 0  # the warm-up epoch did not mix
    assert _mixed_steps(full) == 2  # ... and the next epoch's two steps did
    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copy(first, resumed / "last.ckpt")
    run = fit(_cfg(tmp_path, *settings, name="resumed"), resume="last")
    assert _mixed_steps(run) == 2
    a, b = (load_checkpoint(r / "checkpoints" / "last.ckpt")["state_dict"] for r in (full, run))
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) == 0.0


def test_points_all_is_every_declared_stage_and_auto_the_paper_set(tmp_path):
    model = timm.create_model("test_resnet", num_classes=3)
    stages = [e["module"] for e in model.feature_info]  # act1 (stride-2 stem), layer1..layer4
    with ManifoldMixup(model, points="all", seed=0) as mixer:
        assert mixer.points == ["input", *stages]
    with ManifoldMixup(model, seed=0) as mixer:
        assert mixer.points == ["input", "layer1", "layer2"]
    cfg = _cfg(tmp_path, "mix.points=all")
    mixer = build_mixer(ClassificationRecipe(cfg).build_model(), cfg)
    assert mixer.points == ["input", *stages]
    mixer.close()


def test_clean_weight_gradient_equals_a_hand_written_two_forward_loss(tmp_path):
    cfg = _cfg(tmp_path, "mix.variant=input", "mix.clean_weight=0.5", "mix.alpha=1.0")
    torch.manual_seed(0)
    module = MixupModule(cfg, ClassificationRecipe(cfg))
    module.train()
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    state = module.mixer.generator.get_state()
    loss, plan = module.train_loss(x, y)
    loss.backward()
    got = {n: p.grad.clone() for n, p in module.model.named_parameters()}
    module.model.zero_grad()

    module.mixer.generator.set_state(state)
    want_plan = module.mixer.sample(6, input_shape=tuple(x.shape))
    assert torch.equal(want_plan.perm, plan.perm) and float(want_plan.lam) == float(plan.lam)
    module.mixer.enabled = False  # plain forwards from here on; the mixing is written out by hand
    lam, perm = float(plan.lam), plan.perm
    out_mixed = module.model(lam * x + (1 - lam) * x[perm])
    soft = lam * F.one_hot(y, 10).float() + (1 - lam) * F.one_hot(y[perm], 10).float()
    mixed_loss = -(soft * F.log_softmax(out_mixed, dim=1)).sum(1).mean()
    want = mixed_loss + 0.5 * F.cross_entropy(module.model(x), y)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    want.backward()
    for name, p in module.model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    # control: without the clean term the gradient differs (the test can fail)
    module.mixer.enabled = True
    module.config.mix.clean_weight = 0.0
    module.model.zero_grad()
    module.mixer.generator.set_state(state)
    module.train_loss(x, y)[0].backward()
    assert not torch.allclose(got["fc.weight"], module.model.fc.weight.grad)
    module.mixer.close()


@pytest.mark.parametrize(("override", "fragment"), [
    ("mix.warmup_epochs=-1", "'mix.warmup_epochs': must be >= 0 (received -1)"),
    ("mix.warmup_epochs=2", "leaves no mixed epoch of train.max_epochs=2"),
    ("mix.clean_weight=-0.5", "'mix.clean_weight': must be >= 0 (0 = off; 1 = RegMixup's eta = 1) (received -0.5)"),
    ("mix.clean_weight=.inf", "'mix.clean_weight': received inf; every number in a config must be finite"),
    ("mix.points=every", "'mix.points': points must be 'auto' (the family's default), 'all'"),
    ("mix.points=[]", "'mix.points': points is empty"),
])
def test_knob_ranges_are_validated(tmp_path, override, fragment):
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, "train.max_epochs=2", override)
    assert fragment in str(err.value)
