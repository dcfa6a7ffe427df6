"""Helpers of the bad-input tests: a network block, file snapshots, message checks, broken files, a
tiny model and a YAML writer."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

__all__ = ["TinyNet", "no_network", "png", "says", "snapshot", "truncate", "write_yaml"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and mtime (ns)."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(root).rglob("*")) if p.is_file()}


def says(err: BaseException | str, *needles: str) -> None:
    """The message holds every needle (the file/key/value and the fix)."""
    text = str(err.value if hasattr(err, "value") else err)
    missing = [n for n in needles if n not in text]
    assert not missing, f"message lacks {missing}: {text}"


def png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_yaml(folder: Path, raw: dict) -> Path:
    """``raw`` as ``folder/run.yaml``."""
    path = Path(folder) / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class TinyNet(nn.Module):
    """A conv and a linear head on ``(B, 1, 4, 4)`` inputs, 3 classes; no batch norm, so it trains on one sample."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))
