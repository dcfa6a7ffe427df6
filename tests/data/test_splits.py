"""Seeded splits and orders (mmix_applied.data.splits): the exact indices are pinned for two seeds.

The expected values were computed on the code before the splits became one module (#21): the
classification recipe's own per-class split, ``split_glyphs``'s own loop, the sampler's and the
handwriting recipe's own ``torch.randperm``. The committed study results and the resume tests
depend on them, so a change here changes what every run trains on.
"""

import numpy as np
import pytest
import torch

from mmix_applied.data.digit_strings import split_glyphs
from mmix_applied.data.sampling import SeededRandomSampler
from mmix_applied.data.splits import seeded_permutation, stratified_split, subsample_per_class

GLYPHS = {
    0: {"train": [0, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 28, 29, 30, 31, 32, 33,
                  34, 35, 36, 38, 39, 41, 43, 44, 48, 49, 50, 55, 56, 57, 58, 59],
        "val": [11, 20, 25, 40, 51, 54], "test": [1, 2, 3, 5, 27, 37, 42, 45, 46, 47, 52, 53]},
    7: {"train": [0, 1, 2, 3, 5, 7, 8, 9, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23, 24, 28, 30, 31, 32, 35, 36, 37,
                  38, 39, 41, 42, 43, 45, 46, 48, 49, 50, 54, 55, 56, 58, 59],
        "val": [10, 14, 15, 44, 52, 57], "test": [4, 6, 25, 26, 27, 29, 33, 34, 40, 47, 51, 53]},
}
SAMPLER = {0: ([8, 0, 5, 9, 7, 4, 2, 10, 3, 1, 11, 6], [1, 4, 6, 8, 11, 0, 5, 3, 2, 9, 10, 7]),
           7: ([5, 8, 6, 9, 1, 2, 3, 7, 0, 10, 11, 4], [10, 4, 11, 2, 5, 8, 6, 7, 3, 0, 1, 9])}
SUBSAMPLE = {0: [1, 15, 17, 18, 25, 26, 27, 28, 29], 7: [7, 8, 15, 18, 19, 21, 22, 23, 29]}
PERMUTATION = {0: [4, 1, 7, 5, 3, 9, 0, 8, 6, 2], 7: [5, 0, 3, 4, 1, 7, 9, 6, 8, 2]}


@pytest.mark.parametrize("seed", [0, 7])
def test_glyph_pools_are_the_pinned_indices(seed):
    pools = split_glyphs(np.arange(60) % 3, seed=seed)
    assert {k: v.tolist() for k, v in pools.items()} == GLYPHS[seed]
    # the same cut through the shared function: per class train (70 %), val (10 %), the rest test
    train, val, test = stratified_split(np.arange(60) % 3, (0.7, 0.1), seed=seed)
    assert [train.tolist(), val.tolist(), test.tolist()] == [GLYPHS[seed][k] for k in ("train", "val", "test")]


@pytest.mark.parametrize("seed", [0, 7])
def test_loader_order_is_the_pinned_permutation_per_epoch(seed):
    sampler = SeededRandomSampler(range(12), seed=seed)
    first = list(sampler)
    sampler.set_epoch(1)
    assert (first, list(sampler)) == SAMPLER[seed]


@pytest.mark.parametrize("seed", [0, 7])
def test_permutation_and_subsample_are_pinned(seed):
    assert seeded_permutation(10, seed=seed) == PERMUTATION[seed]
    assert seeded_permutation(10, seed=seed) == torch.randperm(10, generator=torch.Generator().manual_seed(seed)).tolist()
    assert subsample_per_class(np.arange(30) % 3, 3, seed=seed).tolist() == SUBSAMPLE[seed]


def test_stratified_split_cuts_each_class_by_rounded_shares():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    first, second, rest = stratified_split(labels, (0.2, 0.5), seed=3)
    # class 0: 2 + 5 + 3; class 1: round(1.0) = 1, round(2.5) = 2 (half to even), 2 left; class 2: 0 + 0 (round(0.5)) + 1
    sizes = [[int(np.sum(labels[p] == c)) for c in range(3)] for p in (first, second, rest)]
    assert sizes == [[2, 1, 0], [5, 2, 0], [3, 2, 1]]
    assert sorted(np.concatenate([first, second, rest]).tolist()) == list(range(16))
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in (first, second, rest))
    empty, everything = stratified_split(labels, (0.0,), seed=3)
    assert empty.size == 0 and everything.tolist() == list(range(16))
