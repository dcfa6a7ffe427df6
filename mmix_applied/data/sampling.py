"""Reproducible data order: a shuffling sampler seeded from ``(seed, epoch)``, and a loader helper.

With it, a run resumed at an epoch boundary sees the batches an uninterrupted run would have seen
(it depends on no global RNG state). Under DDP Lightning replaces it, as it does any
``RandomSampler``, by a ``DistributedSampler`` seeded with the run's seed, which is reproducible too.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence, Sized
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from mmix_applied.data.splits import seeded_permutation

__all__ = ["SameSizeBatchSampler", "SeededRandomSampler", "make_loader"]


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


class SameSizeBatchSampler(BatchSampler):
    """Evaluation batches whose items all have one size, so images of different sizes batch without padding.

    Indices come from ``sampler`` in its order and wait in one bucket per size; a bucket is yielded
    when it holds ``batch_size`` items, and the partial buckets at the end (in the order their
    sizes were first met). Every index is yielded exactly once; a data set of one size gives the
    batches a plain ``BatchSampler`` gives. MONAI evaluates whole images of different sizes with
    batch size 1; this batches those that agree.

    With ``in_order`` the items keep the sampler's order (predictions are written in input order):
    a batch ends where the size changes.

    Args:
        sampler: The indices (a ``SequentialSampler``, or the ``DistributedSampler`` Lightning puts in
            its place under DDP: the sizes are looked up by index).
        batch_size: Most items in a batch.
        drop_last: Drop partial buckets.
        sizes: One hashable size per item of the data set (e.g. ``(height, width)``).
        in_order: Batch runs of neighbours of one size only, keeping the order.
    """

    def __init__(self, sampler: Sampler[int] | Iterable[int], batch_size: int, drop_last: bool = False, *,
                 sizes: Sequence[Hashable], in_order: bool = False) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.sizes, self.in_order = list(sizes), in_order

    def _batches(self) -> Iterator[list[int]]:
        buckets: dict[Hashable, list[int]] = {}
        for index in self.sampler:
            size = self.sizes[index]
            if self.in_order and size not in buckets:
                yield from (list(b) for b in buckets.values() if b)  # the run of the previous size ends
                buckets.clear()
            bucket = buckets.setdefault(size, [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()
        yield from (list(b) for b in buckets.values() if b)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches():
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        return sum(1 for _ in self)


def make_loader(dataset: Dataset, *, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool | None = None, persistent_workers: bool = False,
                sizes: Sequence[Hashable] | None = None, in_order: bool = False, **kwargs: Any) -> DataLoader:
    """A DataLoader; training loaders shuffle with :class:`SeededRandomSampler` and drop the last
    partial batch (mixing needs >= 2 samples).

    ``sizes`` (evaluation only): one size per item; when they differ, batches hold items of one size
    (:class:`SameSizeBatchSampler`, keeping the order with ``in_order``) instead of failing in the collate.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, received {batch_size}")
    if not train and sizes is not None and len(set(sizes)) > 1:
        batches = SameSizeBatchSampler(SequentialSampler(dataset), batch_size, bool(drop_last), sizes=sizes,
                                       in_order=in_order)
        return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                          persistent_workers=persistent_workers and num_workers > 0, **kwargs)
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
