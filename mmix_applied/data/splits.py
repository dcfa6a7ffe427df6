"""Seeded splits and orders of data: the same indices for the same seed, on any machine.

Each mechanism lives here once, drawing from its own generator (never a global RNG state):

- :func:`seeded_permutation`: a permutation of ``n`` items from a ``torch.Generator`` seeded
  with ``seed``. The training loader's order of each epoch
  (:class:`mmix_applied.data.sampling.SeededRandomSampler`) and the handwriting recipe's
  validation hold-out.
- :func:`stratified_split`: per class, one NumPy generator's permutation of the class's members
  cut into consecutive parts. The classification recipe's split of an image folder or CSV into
  train / val / test, and the digit-glyph pools of the digit strings and canvases.
- :func:`subsample_per_class`: a labeled subset of ``k`` samples per class
  (``data.labels_per_class``).

The committed study results and the resume tests depend on these exact indices:
``tests/data/test_splits.py`` pins them for two seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["seeded_permutation", "stratified_split", "subsample_per_class"]


def seeded_permutation(n: int, *, seed: int) -> list[int]:
    """A permutation of ``range(n)`` drawn by ``torch.randperm`` from a generator seeded with ``seed``."""
    return torch.randperm(int(n), generator=torch.Generator().manual_seed(int(seed))).tolist()


def stratified_split(labels: Sequence[int] | np.ndarray, fractions: Sequence[float], *, seed: int) -> list[np.ndarray]:
    """Split sample indices per class into ``len(fractions) + 1`` disjoint parts, reproducibly from ``seed``.

    One NumPy generator (``default_rng(seed)``) permutes the members of each class in turn, in
    sorted class order; the permutation is cut into consecutive parts of ``round(f * n)`` members,
    one per fraction ``f`` (``n``: the class's size), and the rest forms the last part.

    Args:
        labels: The class of each sample.
        fractions: The share of each class in each part but the last (a 0 leaves that part empty).
        seed: Seed of the generator.

    Returns:
        ``len(fractions) + 1`` sorted ``int64`` index arrays (the last: what the fractions leave).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.cumsum([int(round(f * len(members))) for f in fractions])
        for part, chunk in zip(parts, np.split(members, cuts)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, dtype=np.int64) for p in parts]


def subsample_per_class(labels: Sequence[int] | np.ndarray, labels_per_class: int | None, *,
                        seed: int) -> np.ndarray:
    """Indices of ``labels_per_class`` samples per class, drawn reproducibly from ``seed``.

    ``None`` keeps everything. Indices come back sorted. Raises ValueError when a class has fewer
    samples than requested.
    """
    labels = np.asarray(labels)
    if labels_per_class is None:
        return np.arange(len(labels))
    if labels_per_class < 1:
        raise ValueError(f"labels_per_class must be >= 1 or null, received {labels_per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < labels_per_class:
            raise ValueError(f"labels_per_class={labels_per_class} but class {int(cls)} has only "
                             f"{len(members)} samples; lower labels_per_class")
        chosen.append(rng.choice(members, size=labels_per_class, replace=False))
    return np.sort(np.concatenate(chosen))
