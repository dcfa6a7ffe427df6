"""Shared test set-up: small thread pools and a seeded global RNG.

(albumentations' update check is switched off by the package root, the one place that sets it.)
"""

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed_global_rng():
    """Tests that build models get the same initial weights every run."""
    torch.manual_seed(0)
    yield
