"""The one rule for seeding augmentation: a sample's random draws are a function of
``(seed, epoch, index)`` alone.

So they depend on no global RNG state, on no DataLoader worker layout and on no order of earlier
samples: a run resumed at an epoch boundary draws exactly what an uninterrupted run would, and
workers never repeat each other. The engine calls ``set_epoch(epoch)`` on every training data set
that has it (``mmix_applied.engine.callbacks.EpochToDataset``); every augmenting data set of the
package derives from :class:`SeededAugmentation` (or, for a callable augmentation, takes
``index=`` and holds its own ``set_epoch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["SeededAugmentation", "augmentation_seed", "seed_transform"]


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The 32-bit seed of sample ``index`` in ``epoch`` of a stream seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)]).generate_state(1)[0])


def seed_transform(transform: Any, seed: int) -> None:
    """Seed a pipeline's own generator: albumentations ``Compose.set_random_seed`` or MONAI
    ``Randomizable.set_random_state`` (which a MONAI ``Compose`` passes to its transforms)."""
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
    elif hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed)


class SeededAugmentation(Dataset):
    """Base of augmenting data sets: ``set_epoch`` and the per-sample seed of the one rule.

    Args:
        seed: Seed of the augmentation stream (the run's seed).
    """

    def __init__(self, *, seed: int | None = 0) -> None:
        self.seed = 0 if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine at each epoch start so augmentation differs per epoch, reproducibly."""
        self.epoch = int(epoch)

    def sample_seed(self, index: int) -> int:
        """The seed of sample ``index`` in the current epoch."""
        return augmentation_seed(self.seed, self.epoch, index)

    def seed_for(self, transform: Any, index: int) -> Any:
        """Seed ``transform`` for sample ``index`` and return it (``None`` passes through)."""
        if transform is not None:
            seed_transform(transform, self.sample_seed(index))
        return transform
