"""The one data module every recipe uses: seeded, resumable training order; eval batch size; workers.

Evaluation batches hold items of one size when a data set's items differ in size (whole images of
any size: see :meth:`DataModule.item_sizes`).

A recipe hands it its data sets (or builders of them, called on first use) and, when batches
need one, a collate function; the loaders come from :func:`mmix_applied.data.sampling.make_loader`,
so the training order of epoch ``e`` is a function of ``(seed, e)`` and a resumed run sees the
batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset

from mmix_applied.data.sampling import make_loader
from mmix_applied.engine.performance import EpochSyncedDataset, worker_init

__all__ = ["DataModule"]

SPLITS = ("train", "val", "test", "predict")


class DataModule(pl.LightningDataModule):
    """Train / val / test / predict loaders over a recipe's data sets.

    Args:
        datasets: ``split -> Dataset`` or ``split -> callable returning one`` (built once, on first use).
        batch_size: Training batch size (per process).
        eval_batch_size: Batch size of val / test / predict; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes.
        seed: Seed of the training order (the run's seed).
        collate_fn: Batches samples (``None``: PyTorch's default).
        recipe: The recipe's name, for error messages.
    """

    def __init__(self, datasets: Mapping[str, Dataset | Callable[[], Dataset]], *, batch_size: int,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, recipe: str = "") -> None:
        super().__init__()
        unknown = sorted(set(datasets) - set(SPLITS))
        if unknown:
            raise ValueError(f"DataModule: unknown splits {unknown}; valid: {', '.join(SPLITS)}")
        self._sources = dict(datasets)
        self._built: dict[str, Dataset] = {}
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers, self.seed, self.collate_fn, self.recipe = num_workers, seed, collate_fn, recipe

    def dataset(self, split: str) -> Dataset:
        """The data set of ``split``, built on first use.

        Raises:
            ValueError: If the recipe has no data for ``split``.
        """
        if split not in self._built:
            if split not in self._sources:
                raise ValueError(f"{self.recipe or 'recipe'}: no {split} data (available: {sorted(self._sources)})")
            source = self._sources[split]
            self._built[split] = source if isinstance(source, Dataset) else source()
        return self._built[split]

    def item_sizes(self, split: str) -> list[Any] | None:
        """The size of every item of ``split`` when its data set tells them (``item_sizes()``), else ``None``.

        Evaluation loaders batch items of one size together when the sizes differ
        (:class:`~mmix_applied.data.sampling.SameSizeBatchSampler`; ``predict`` keeps the input
        order), so whole images of any size are evaluated and predicted without a collate error.
        """
        dataset = self.dataset(split)
        sizes = getattr(dataset, "item_sizes", None)
        return list(sizes()) if callable(sizes) else None

    def loader(self, split: str) -> DataLoader:
        """The DataLoader of ``split``: the seeded, resumable sampler for ``train``, in order otherwise.

        With workers, training workers persist across epochs (the epoch reaches them through
        :class:`~mmix_applied.engine.performance.EpochSyncedDataset`), each worker runs OpenCV
        single-threaded, and batches are pinned when the trainer runs on a CUDA GPU.
        """
        train = split == "train"
        dataset = self.dataset(split)
        workers = self.num_workers > 0
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if train and workers and callable(getattr(dataset, "set_epoch", None)):
            dataset = EpochSyncedDataset(dataset)
        pin = self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)
        loader = make_loader(dataset, batch_size=self.batch_size if train else self.eval_batch_size,
                             train=train, seed=self.seed, num_workers=self.num_workers, collate_fn=self.collate_fn,
                             persistent_workers=train and workers, pin_memory=pin,
                             worker_init_fn=worker_init if workers else None,
                             sizes=None if train else self.item_sizes(split), in_order=split == "predict")
        if train:
            # The epoch is known before the first iterator starts prefetching (Lightning sets it only
            # after; with workers, a resumed run would otherwise start with epoch 0's order and seeds).
            for part in (dataset, loader.sampler):
                if callable(getattr(part, "set_epoch", None)):
                    part.set_epoch(epoch)
        return loader

    def train_dataloader(self) -> DataLoader:
        """Training batches, shuffled by ``(seed, epoch)``."""
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in order."""
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches, in order."""
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Predict batches, in order."""
        return self.loader("predict")
