"""DDP on CPU: two gloo processes fit a tiny config; both ranks train and the checkpoint loads."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    args = ["model.name=test_resnet", "train.max_epochs=1", "train.limit_train_batches=3", "train.limit_val_batches=2",
            "data.labels_per_class=6", "data.batch_size=4", "train.accelerator=cpu", "train.devices=2",
            "train.strategy=ddp", "train.enable_progress_bar=false", "train.loggers=[csv]",
            f"run.dir={tmp_path}", "run.name=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    done = subprocess.run([sys.executable, "-m", "mmix_applied.cli", "fit", "-c", "configs/classification.yaml", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    ranks = [json.loads((run / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, summary in enumerate(ranks):
        assert summary["global_rank"] == r and summary["world_size"] == 2
        assert summary["global_step"] == 3 and summary["samples_seen"] == 12 and summary["mixed_steps"] == 3
    from mmix_applied.config import load_config
    from mmix_applied.engine import MixupModule, load_checkpoint
    from mmix_applied.tasks.classification import ClassificationRecipe

    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3
    # rank 0 alone fitted the temperature after the DDP fit, over the whole (limited) validation split
    saved = json.loads((run / "temperature.json").read_text())
    assert ckpt["mmix"]["temperature"] == saved["temperature"] and saved["positions"] == 2 * 4  # 2 batches of 4
    mixers = ckpt["mmix_mixers"]["model"]["rank_generators"]  # saved by MixerCheckpoint, every rank's
    assert len(mixers) == 2 and not torch.equal(mixers[0], mixers[1])  # each process drew its own plans
    assert torch.equal(mixers[0], ckpt["mmix_mixers"]["model"]["state"]["generator"])
    cfg = load_config(run / "config.yaml")
    module = MixupModule(cfg, ClassificationRecipe(cfg))
    module.load_state_dict(ckpt["state_dict"])
    assert torch.isfinite(module.model(torch.zeros(2, 1, 28, 28))).all()
