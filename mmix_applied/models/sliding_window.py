"""Whole-volume inference for 3D networks trained on patches: MONAI sliding-window inference.

:class:`SlidingWindowNet` is the network itself in ``train()`` mode (patches go straight through,
and the mixer's points are the network's) and runs ``monai.inferers.sliding_window_inference``
over whole volumes in ``eval()`` mode.
"""

from __future__ import annotations

import torch
from torch import nn

from mmix_applied.core.points import INPUT, PointSets, default_points

__all__ = ["SlidingWindowNet", "backbone_names"]


def backbone_names(net: nn.Module) -> list[str]:
    """Backbone modules for the optimizer's backbone learning rate: ``backbone_names``, an smp
    ``encoder`` (or a ``backbone``), else the encoder levels (the default mix points without the input)."""
    declared = getattr(net, "backbone_names", None)
    if declared is not None:
        return list(declared() if callable(declared) else declared)
    for attr in ("encoder", "backbone"):
        if isinstance(getattr(net, attr, None), nn.Module):
            return [attr]
    return [p for p in default_points(net, which="all") if p != INPUT]


class SlidingWindowNet(nn.Module):
    """A 3D network that, in ``eval()`` mode, runs MONAI ``sliding_window_inference`` on whole
    volumes; in training mode it is the network itself (patches go straight through).

    The mix points are the wrapped network's (``mix_points``), so mixing is unchanged.

    Args:
        net: The network.
        roi_size: Window size.
        sw_batch_size: Windows per forward pass.
        overlap: Overlap of neighbouring windows.
    """

    def __init__(self, net: nn.Module, *, roi_size: list[int], sw_batch_size: int = 4, overlap: float = 0.25) -> None:
        super().__init__()
        self.net = net
        self.roi_size, self.sw_batch_size, self.overlap = tuple(roi_size), sw_batch_size, overlap

    def mix_points(self) -> PointSets:
        """The wrapped network's point sets (``auto`` and ``all``), named from this module."""
        auto, every = (default_points(self.net, which=w) for w in ("auto", "all"))
        return PointSets(auto=[f"net.{p}" for p in auto if p != INPUT],
                         all=[f"net.{p}" for p in every if p != INPUT])

    def backbone_names(self) -> list[str]:
        """The wrapped network's backbone modules, named from this module."""
        return [f"net.{n}" for n in backbone_names(self.net)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a patch batch (training), sliding windows over whole volumes (eval)."""
        if self.training:
            return self.net(x)
        from monai.inferers import sliding_window_inference  # MONAI loads only when a volume is inferred

        return sliding_window_inference(x, self.roi_size, self.sw_batch_size, self.net, overlap=self.overlap,
                                        mode="gaussian")
