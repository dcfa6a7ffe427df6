"""Shared test set-up: small thread pools, no network, quiet albumentations."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed_global_rng():
    """Tests that build models get the same initial weights every run."""
    torch.manual_seed(0)
    yield
