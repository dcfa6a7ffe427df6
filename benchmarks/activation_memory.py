"""How much a network keeps for backward, per byte of its float32 input: the basis of the config's memory bound.

    python benchmarks/activation_memory.py [--size 128] [--batch 2]

Sums the bytes of every tensor autograd saves in one training forward pass
(``torch.autograd.graph.saved_tensors_hooks``) and divides by the input batch's bytes.
``mmix_applied.engine.config.memory.ACTIVATION_FACTOR`` must stay below every ratio printed here,
so that a config refused for its size could never have run.
"""

from __future__ import annotations

import argparse

import timm
import torch

from mmix_applied.engine.config.memory import ACTIVATION_FACTOR

__all__ = ["saved_bytes_ratio"]


def saved_bytes_ratio(name: str, *, channels: int, size: int, batch: int) -> float:
    """Bytes saved for backward / bytes of the float32 input, for timm model ``name``."""
    model = timm.create_model(name, num_classes=10, in_chans=channels).train()
    x = torch.randn(batch, channels, size, size)
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return total / (x.numel() * x.element_size())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    for name, channels in [("test_resnet", 1), ("resnet18", 3), ("resnet18", 1)]:
        ratio = saved_bytes_ratio(name, channels=channels, size=args.size, batch=args.batch)
        print(f"{name:12s} {channels} ch  {ratio:7.1f} x input   (ACTIVATION_FACTOR = {ACTIVATION_FACTOR})")


if __name__ == "__main__":
    main()
