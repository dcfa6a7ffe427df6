"""Engine callbacks: epoch-seeded augmentation, backbone freezing, a per-rank summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from mmix_applied.engine.modelzoo import set_backbone_trainable
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["BackboneFreeze", "EpochToDataset", "RankSummary"]


def _datasets(loader: Any) -> list[Any]:
    if loader is None:
        return []
    if isinstance(loader, (list, tuple)):
        return [d for item in loader for d in _datasets(item)]
    if isinstance(loader, dict):
        return [d for item in loader.values() for d in _datasets(item)]
    dataset = getattr(loader, "dataset", None)
    return [dataset] if dataset is not None else []


class EpochToDataset(pl.Callback):
    """Tells training data sets with ``set_epoch`` the current epoch (seeds per-epoch augmentation)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Call ``dataset.set_epoch(epoch)`` on the training data sets that have it."""
        for dataset in _datasets(trainer.train_dataloader):
            set_epoch = getattr(dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(trainer.current_epoch)


class BackboneFreeze(pl.Callback):
    """Train only the head for the first ``epochs`` epochs (re-applied on resume).

    Args:
        epochs: Number of frozen-backbone epochs.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Freeze or unfreeze the backbone for this epoch."""
        set_backbone_trainable(pl_module.model, trainer.current_epoch >= self.epochs)


class RankSummary(pl.Callback):
    """Writes ``run_dir/ranks/rank{r}.json`` at the end of fit: steps and samples this process trained on.

    Args:
        run_dir: The run directory.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.samples = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Count the samples of this process."""
        x, _ = pl_module.recipe.split_batch(batch)
        self.samples += int(x.shape[0]) if hasattr(x, "shape") else 1

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the summary of this process."""
        summary = {"global_rank": trainer.global_rank, "world_size": trainer.world_size,
                   "global_step": trainer.global_step, "epochs": trainer.current_epoch,
                   "samples_seen": self.samples, "mixed_steps": getattr(pl_module, "mixed_steps", 0),
                   "skipped_steps": getattr(pl_module, "skipped_steps", 0)}
        path = self.run_dir / "ranks" / f"rank{trainer.global_rank}.json"
        atomic_write_text(path, json.dumps(summary, indent=2))
