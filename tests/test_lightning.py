"""MixerCheckpoint: a user's own LightningModule, interrupted and resumed, ends with the
weights of an uninterrupted run (bit-equal) with the callback, and with other weights without it
(the control: the resumed mixer replays the first epoch's plans)."""

import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmix_applied import ManifoldMixup
from mmix_applied.lightning import MixerCheckpoint, mixers_of
from tests.helpers import ROOT


class UserModule(pl.LightningModule):
    """What a user writes: a model, a mixer made in __init__, a mixed loss; no checkpoint hooks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.mixer = ManifoldMixup(self.net, points=["input", "1"], seed=0)

    def training_step(self, batch, _index):
        x, y = batch
        out, plan = self.mixer(x)
        return plan.lam * F.cross_entropy(out, y) + (1 - plan.lam) * F.cross_entropy(out, y[plan.perm])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(12, 6, generator=g), torch.randint(0, 3, (12,), generator=g))
    return DataLoader(data, batch_size=4, shuffle=False)


def _fit(module, epochs, *, callbacks=(), ckpt_path=None, save_to=None):
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(module, _loader(), ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return torch.cat([p.detach().flatten() for p in module.net.parameters()])


def test_resumed_fit_equals_uninterrupted_with_the_callback_and_differs_without(tmp_path):
    uninterrupted = _fit(UserModule(), 2)
    ckpt = tmp_path / "half.ckpt"
    _fit(UserModule(), 1, callbacks=[MixerCheckpoint()], save_to=ckpt)
    saved = torch.load(ckpt, weights_only=True)["mmix_mixers"]
    assert list(saved) == ["net"] and len(saved["net"]["rank_generators"]) == 1
    resumed = _fit(UserModule(), 2, callbacks=[MixerCheckpoint()], ckpt_path=ckpt)
    assert torch.equal(resumed, uninterrupted)
    with pytest.warns(UserWarning, match="holds no mixer state"):
        bare = tmp_path / "bare.ckpt"
        _fit(UserModule(), 1, save_to=bare)
        _fit(UserModule(), 2, callbacks=[MixerCheckpoint()], ckpt_path=bare)
    control = _fit(UserModule(), 2, ckpt_path=ckpt)  # the same checkpoint, no callback
    assert (control - uninterrupted).abs().max() > 1e-4


def test_mixers_of_finds_every_attached_mixer_by_submodule_name():
    module = UserModule()
    module.other = nn.Linear(2, 2)
    second = ManifoldMixup(module.other, points=["input"], seed=1)
    assert mixers_of(module) == {"net": module.mixer, "other": second}
    second.close()
    assert mixers_of(module) == {"net": module.mixer}


def test_the_package_root_does_not_import_lightning():
    code = "import sys, mmix_applied; print('lightning' in sys.modules, 'lightning.pytorch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr[-1500:]


@pytest.mark.slow
def test_under_ddp_each_rank_resumes_its_own_mixer_stream(tmp_path):
    """Two gloo processes: the resumed run ends, on every rank, with the generator state and the
    weights of the uninterrupted run, although the ranks' streams differ."""
    import os

    script = ROOT / "tests" / "helpers" / "mixer_checkpoint_ddp.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    for mode in ("full", "half", "resume"):
        done = subprocess.run([sys.executable, str(script), mode, str(tmp_path)], env=env, capture_output=True,
                              text=True, timeout=420, cwd=script.parent)
        assert done.returncode == 0, done.stderr[-3000:]
    full = [torch.load(tmp_path / f"full_rank{r}.pt") for r in (0, 1)]
    resumed = [torch.load(tmp_path / f"resume_rank{r}.pt") for r in (0, 1)]
    assert not torch.equal(full[0]["generator"], full[1]["generator"])
    assert len(torch.load(tmp_path / "half.ckpt", weights_only=True)["mmix_mixers"]["net"]["rank_generators"]) == 2
    for r in (0, 1):
        assert torch.equal(resumed[r]["generator"], full[r]["generator"]), r
        assert torch.equal(resumed[r]["weights"], full[r]["weights"]), r
