"""The embedded digit-string lines: determinism, disjoint glyph pools, rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmix_applied.data.digit_strings import DIGITS, DigitStrings, mnist_glyphs, render_digit_line, split_glyphs


def test_glyph_pools_are_disjoint_stratified_and_cover_mnist():
    _, labels = mnist_glyphs()
    pools = split_glyphs(labels, seed=0)
    sets = {k: set(v.tolist()) for k, v in pools.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set().union(*sets.values()) == set(range(len(labels)))
    for name, share in zip(("train", "val", "test"), (350, 50, 100)):
        assert np.bincount(labels[pools[name]], minlength=10).tolist() == [share] * 10
    assert np.array_equal(split_glyphs(labels, seed=0)["test"], pools["test"])
    assert not np.array_equal(split_glyphs(labels, seed=1)["test"], pools["test"])
    with pytest.raises(ValueError, match="summing to 1"):
        split_glyphs(labels, fractions=(0.5, 0.2, 0.2))


def test_lines_use_only_their_split_glyphs_even_with_different_line_seeds():
    train = DigitStrings("train", num_lines=60, seed=1)
    test = DigitStrings("test", num_lines=60, seed=2)
    _, labels = mnist_glyphs()
    used = {}
    for name, ds in (("train", train), ("test", test)):
        used[name] = set()
        for i in range(len(ds)):
            _, text, glyphs = ds.line(i)
            assert set(glyphs.tolist()) <= set(ds.glyph_indices.tolist())
            assert "".join(DIGITS[d] for d in labels[glyphs]) == text  # transcription matches the glyphs
            assert 3 <= len(text) <= 10
            used[name] |= set(glyphs.tolist())
    assert not used["train"] & used["test"]


def test_lines_are_deterministic_random_access_and_seed_dependent():
    a = DigitStrings("val", num_lines=20, seed=5, height=24)
    b = DigitStrings("val", num_lines=20, seed=5, height=24)
    c = DigitStrings("val", num_lines=20, seed=6, height=24)
    for i in (7, 3, 7):
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["text"] == b[i]["text"]
    assert [a[i]["text"] for i in range(20)] != [c[i]["text"] for i in range(20)]
    item = a[3]
    assert item["image"].shape[:2] == (1, 24) and item["width"] == item["image"].shape[-1]
    assert item["image"].dtype == torch.float32 and 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["source"] == "digits:val:3"
    with pytest.raises(IndexError):
        a.line(20)


def test_word_gaps_and_lengths():
    ds = DigitStrings("train", num_lines=40, min_digits=4, max_digits=4, space_prob=0.5)
    texts = [ds[i]["text"] for i in range(40)]
    assert ds.charset == " " + DIGITS
    assert all(len(t.replace(" ", "")) == 4 and not t.startswith(" ") and not t.endswith(" ") for t in texts)
    assert any(" " in t for t in texts) and "  " not in "".join(texts)
    assert DigitStrings("train", num_lines=1).charset == DIGITS


def test_render_places_every_glyph_and_slant_widens():
    glyph = np.zeros((28, 28), np.uint8)
    glyph[4:24, 12:16] = 255  # a "1"
    rng = np.random.default_rng(0)
    straight = render_digit_line([glyph] * 3, rng, spacing=(6, 6), jitter=0, scale=(1, 1), slant=0.0)
    assert straight.shape[0] == 28 + 4
    columns = np.flatnonzero(straight.max(axis=0) > 0)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert [len(r) for r in runs] == [4, 4, 4] and np.diff([r[0] for r in runs]).tolist() == [10, 10]
    slanted = render_digit_line([glyph] * 3, np.random.default_rng(0), spacing=(6, 6), jitter=0, scale=(1, 1), slant=0.5)
    assert slanted.shape[1] > straight.shape[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "dev"}, "split must be one of"),
        ({"min_digits": 5, "max_digits": 3}, "min_digits"),
        ({"num_lines": 0}, "num_lines"),
        ({"space_prob": 1.0}, "space_prob"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitStrings(**kwargs)
