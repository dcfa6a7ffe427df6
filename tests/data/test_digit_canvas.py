"""The digit-canvas segmentation task: disjoint glyph pools, determinism, masks that match the ink,
class balance, the seeded shift augmentation, shapes, dtypes and the input checks."""

import cv2
import numpy as np
import pytest
import torch

from mmix_applied.data.digit_canvas import (
    CANVAS_MEAN,
    CANVAS_STD,
    NUM_CANVAS_CLASSES,
    DigitCanvas,
    digit_canvas_datasets,
)
from mmix_applied.data.mnist import load_mnist


@pytest.fixture(scope="module")
def splits():
    return digit_canvas_datasets(seed=3, num_val=32, num_test=32)


def test_glyph_pools_are_disjoint_and_every_canvas_draws_from_its_own(splits):
    pools = {name: set(ds.glyph_indices.tolist()) for name, ds in splits.items()}
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"] and not pools["val"] & pools["test"]
    assert sum(map(len, pools.values())) == len(load_mnist()[1])  # every source image in exactly one pool
    _, labels = load_mnist()
    for name, ds in splits.items():
        for i in range(len(ds)):
            c = ds.canvas(i)
            assert set(c.sources) <= pools[name]
            assert [int(labels[s]) for s in c.sources] == list(c.digits)  # the label of the image drawn


def test_same_seed_and_index_give_the_same_canvas_other_seeds_differ():
    a, b = DigitCanvas("train", num_canvases=8, seed=5), DigitCanvas("train", num_canvases=8, seed=5)
    for i in (0, 7, 3):  # random access, any order
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = DigitCanvas("train", num_canvases=8, seed=6)
    assert not all(torch.equal(a[i][1], other[i][1]) for i in range(8))
    # the eval splits do not follow the run seed by default: every run is tested on the same canvases
    s1, s2 = digit_canvas_datasets(seed=1, num_test=4), digit_canvas_datasets(seed=2, num_test=4)
    assert all(torch.equal(s1["test"][i][1], s2["test"][i][1]) for i in range(4))
    assert not all(torch.equal(s1["train"][i][1], s2["train"][i][1]) for i in range(4))


def test_mask_is_the_ink_above_threshold_with_each_glyphs_digit():
    ds = DigitCanvas("val", num_canvases=16, seed=0)
    images, _ = load_mnist()
    for i in range(len(ds)):
        c = ds.canvas(i)
        assert c.ink.dtype == np.float32 and c.mask.dtype == np.int64
        np.testing.assert_array_equal(c.mask > 0, c.ink > ds.threshold)
        assert 2 <= len(c.digits) <= 3
        # rebuild each glyph's layer independently: a labeled pixel belongs to a glyph whose ink is
        # above the threshold there and carries that glyph's digit; the last such glyph wins
        owner = np.zeros_like(c.mask)
        for digit, source, (top, left, h, w) in zip(c.digits, c.sources, c.boxes):
            g = images[source]
            rows, cols = np.flatnonzero(g.max(1)), np.flatnonzero(g.max(0))
            piece = cv2.resize(g[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], (w, h), interpolation=cv2.INTER_LINEAR)
            region = owner[top:top + h, left:left + w]
            region[piece.astype(np.float32) / 255 > ds.threshold] = digit + 1
        np.testing.assert_array_equal(owner, c.mask)


def test_item_shapes_dtypes_and_normalisation():
    ds = DigitCanvas("train", num_canvases=64, seed=0)
    x, y = ds[0]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32
    assert y.shape == (64, 64) and y.dtype == torch.int64
    assert 0 <= int(y.min()) and int(y.max()) < NUM_CANVAS_CLASSES
    np.testing.assert_allclose(x[0].numpy(), (ds.canvas(0).ink - CANVAS_MEAN) / CANVAS_STD, rtol=1e-6)
    stack = torch.stack([ds[i][0] for i in range(len(ds))])
    assert abs(float(stack.mean())) < 0.15 and abs(float(stack.std()) - 1) < 0.15  # the constants fit the data


def test_every_digit_class_appears_in_the_default_training_set():
    ds = DigitCanvas("train", seed=0)  # 64 canvases
    counts = np.bincount(np.concatenate([ds.canvas(i).mask.ravel() for i in range(len(ds))]),
                         minlength=NUM_CANVAS_CLASSES)
    assert (counts[1:] > 0).all(), counts
    assert counts[0] > counts[1:].sum()  # background dominates, as on real scans
    digits = np.bincount([d for i in range(len(ds)) for d in ds.canvas(i).digits], minlength=10)
    assert digits.min() >= 5  # about 16 glyphs a class expected from 64 x 2.5 uniform draws


def test_shift_augmentation_is_seeded_by_seed_epoch_index_and_moves_image_and_mask_together():
    ds = DigitCanvas("train", num_canvases=8, seed=0, max_shift=3)
    plain = DigitCanvas("train", num_canvases=8, seed=0)
    seen = set()
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, y = ds[i]
            assert torch.equal(ds[i][0], x)  # the same (seed, epoch, index): the same draw
            dy, dx = ds._shift(i)
            seen.add((dy, dx))
            ref_x, ref_y = plain[i]
            moved = np.zeros((64, 64), dtype=np.int64)
            src = ref_y.numpy()
            moved[max(dy, 0):64 + min(dy, 0), max(dx, 0):64 + min(dx, 0)] = src[max(-dy, 0):64 - max(dy, 0),
                                                                                max(-dx, 0):64 - max(dx, 0)]
            np.testing.assert_array_equal(y.numpy(), moved)
            np.testing.assert_array_equal(y.numpy() > 0, x[0].numpy() * CANVAS_STD + CANVAS_MEAN > ds.threshold)  # ink is k/255, far from 0.5
    assert len(seen) > 3  # the shift changes with the epoch and the index


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "tests"}, "split must be one of"),
    ({"num_canvases": 0}, "num_canvases must be an integer >= 1; received 0"),
    ({"digits": (3, 2)}, "received \\(3, 2\\)"),
    ({"size": 32}, "size must hold the largest glyph"),
    ({"threshold": 1.0}, "threshold must be an ink level"),
    ({"max_shift": 40}, "max_shift must be an integer in \\[0, 32\\)"),
])
def test_bad_options_say_what_was_received(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitCanvas(**kwargs)


def test_index_out_of_range_says_what_was_received():
    with pytest.raises(IndexError, match="received 4"):
        DigitCanvas("train", num_canvases=4).canvas(4)
