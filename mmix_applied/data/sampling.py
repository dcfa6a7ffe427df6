"""Reproducible data order: a shuffling sampler seeded from ``(seed, epoch)``, and a loader helper.

With it, a run resumed at an epoch boundary sees the batches an uninterrupted run would have seen
(it depends on no global RNG state). Under DDP Lightning replaces it, as it does any
``RandomSampler``, by a ``DistributedSampler`` seeded with the run's seed, which is reproducible too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mmix_applied.data.splits import seeded_permutation

__all__ = ["SeededRandomSampler", "make_loader"]


class SeededRandomSampler(RandomSampler):
    """A permutation of the data set drawn from ``seed`` and the current epoch.

    Args:
        data_source: The data set (only its length is used).
        seed: Base seed; the order of epoch ``e`` is a function of ``(seed, e)`` alone.
    """

    def __init__(self, data_source: Sized, *, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0
        #: The epoch whose permutation the latest ``__iter__`` yields (None before the first).
        self.iter_epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation ``__iter__`` yields (Lightning calls this)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        self.iter_epoch = self.epoch
        yield from seeded_permutation(len(self.data_source), seed=self.seed * 1_000_003 + self.epoch)

    def __len__(self) -> int:
        return len(self.data_source)


def make_loader(dataset: Dataset, *, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool | None = None, persistent_workers: bool = False, **kwargs: Any) -> DataLoader:
    """A DataLoader; training loaders shuffle with :class:`SeededRandomSampler` and drop the last
    partial batch (mixing needs >= 2 samples)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, received {batch_size}")
    if train and len(dataset) < batch_size and (drop_last is None or drop_last):
        raise ValueError(f"the training set has {len(dataset)} samples, fewer than batch_size={batch_size}: "
                         "every batch would be dropped; lower data.batch_size")
    sampler = SeededRandomSampler(dataset, seed=seed) if train else None
    if train and "generator" not in kwargs:
        # Each new iterator draws its workers' base seed from this generator, not from the global RNG:
        # persistent workers (one iterator for the run) and a resumed run (a new one) then leave the
        # global stream (dropout) in the same state, with or without workers.
        kwargs["generator"] = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=train if drop_last is None else drop_last,
                      persistent_workers=persistent_workers and num_workers > 0, **kwargs)
