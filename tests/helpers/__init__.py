"""Shared test helpers: the repository root, tiny reference models, bad-input tools."""

from pathlib import Path

#: The repository root (configs/, docs/, examples/ live there).
ROOT = Path(__file__).resolve().parents[2]
