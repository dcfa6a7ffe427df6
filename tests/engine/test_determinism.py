"""Determinism: on CPU the same config and seed give the same metrics and weights, run after
run (mixing plans, data order, augmentation and dropout all seeded); another seed does not."""

import csv
from pathlib import Path

import torch

from mmix_applied.config import load_config
from mmix_applied.engine import fit, load_checkpoint
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
TINY = ["model.name=test_resnet", "model.options={drop_rate: 0.3}", "mix.prob=0.7", "data.augment=light",
        "train.max_epochs=2", "train.limit_train_batches=2", "train.limit_val_batches=1", "data.labels_per_class=2",
        "data.batch_size=8", "data.eval_batch_size=16", "train.accelerator=cpu", "train.devices=1",
        "train.enable_progress_bar=false", "train.loggers=[csv]", "train.log_every_n_steps=1"]


def _fit(root: Path, name: str, seed: int) -> tuple[dict[str, list[str]], dict[str, torch.Tensor]]:
    # train.deterministic is left at its default (false): CPU kernels are deterministic anyway
    run = fit(load_config(CONFIG, [*TINY, f"seed={seed}", f"run.dir={root}", f"run.name={name}"]))
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    metrics = {key: [r[key] for r in rows if r[key] != ""] for key in rows[0] if key.startswith(("train/", "val/"))}
    return metrics, load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


def test_same_seed_same_metrics_and_weights_on_cpu(tmp_path):
    metrics_a, weights_a = _fit(tmp_path, "a", seed=5)
    metrics_b, weights_b = _fit(tmp_path, "b", seed=5)
    assert {"train/loss_step", "val/loss", "val/nll", "val/acc", "val/ece", "val/brier"} <= set(metrics_a)
    assert all(metrics_a[k] for k in ("train/loss_step", "val/nll"))
    assert metrics_a == metrics_b  # the logged strings: equal to the last printed digit
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    metrics_c, _ = _fit(tmp_path, "c", seed=6)  # control: the comparison can fail
    assert metrics_c["train/loss_step"] != metrics_a["train/loss_step"]
    assert metrics_c["val/nll"] != metrics_a["val/nll"]
