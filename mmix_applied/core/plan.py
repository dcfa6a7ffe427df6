"""The MixPlan: one draw per training step that every mixed tensor, target and loss reads.

Drawing once and applying everywhere (MONAI's ``randomize()`` / ``apply()`` split) is what keeps
hidden states, skip connections and targets consistent within a step. All randomness comes from a
``torch.Generator`` the caller owns; nothing here touches global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MixPlan", "sample_beta", "sample_box"]


@dataclass(frozen=True)
class MixPlan:
    """Where and how one training step mixes.

    Attributes:
        point: ``"input"`` or the qualified name of the module whose output is the cut.
        lam: weight of each sample itself: 0-d, or shape ``(B,)`` when drawn per sample. In
            ``cutmix`` mode it is the kept (unswapped) fraction of the state.
        perm: ``(B,)`` permutation; sample ``i`` is mixed with sample ``perm[i]``.
        box: ``(S, 2)`` fractional ``[start, end)`` per spatial dimension in ``cutmix`` mode,
            None in ``mixup`` mode.
    """

    point: str
    lam: Tensor
    perm: Tensor
    box: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of samples the plan was drawn for."""
        return int(self.perm.shape[0])

    def to(self, device: torch.device | str) -> MixPlan:
        """The same plan with its tensors on ``device`` (no copy when they are there already)."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return MixPlan(self.point, move(self.lam), move(self.perm), move(self.box))


def _sample_gamma(shape: float, n: int, generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) draws by Marsaglia & Tsang (2000), with the shape<1 boost.

    ``torch.distributions`` cannot take a generator, so this is the one sampler we write by hand;
    ``tests/core/test_plan.py`` checks it against scipy's Beta distribution.
    """
    boost = shape < 1.0
    a = shape + 1.0 if boost else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64)
    filled = 0
    while filled < n:
        m = 2 * (n - filled) + 4
        x = torch.randn(m, generator=generator, dtype=torch.float64)
        u = torch.rand(m, generator=generator, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        acc = (d * v)[ok][: n - filled]
        out[filled : filled + acc.numel()] = acc
        filled += acc.numel()
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        out = out * u.pow(1.0 / shape)
    return out


def sample_beta(alpha: float, n: int, generator: torch.Generator, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) from ``generator`` only (computed in float64, returned as ``dtype``)."""
    g1 = _sample_gamma(alpha, n, generator)
    g2 = _sample_gamma(alpha, n, generator)
    total = g1 + g2
    # Both gammas can underflow to 0 for tiny alpha; the limit of the Beta is then a fair coin.
    coin = (torch.rand(n, generator=generator, dtype=torch.float64) < 0.5).double()
    lam = torch.where(total > 0, g1 / total.clamp_min(1e-300), coin)
    return lam.to(dtype)


def sample_box(lam: float, grid: Sequence[int], generator: torch.Generator) -> tuple[Tensor, float]:
    """Draw a CutMix box whose area is about ``1 - lam``, snapped to ``grid``.

    Args:
        lam: the Beta draw; the box side per dimension is ``(1 - lam) ** (1 / S)``.
        grid: the spatial size of the state at the mix point (``S`` entries); box edges are
            snapped to multiples of ``1 / grid[d]`` so the kept area is exact there.
        generator: the mixer's generator.

    Returns:
        ``(box, kept)``: the ``(S, 2)`` fractional box and the exact kept fraction (the new lam).
    """
    spatial = len(grid)
    side = (1.0 - float(lam)) ** (1.0 / spatial)
    centres = torch.rand(spatial, generator=generator, dtype=torch.float64)
    box = torch.empty(spatial, 2, dtype=torch.float64)
    for d, n in enumerate(grid):
        lo = min(max(float(centres[d]) - side / 2, 0.0), 1.0)
        hi = min(max(float(centres[d]) + side / 2, 0.0), 1.0)
        box[d, 0] = round(lo * n) / n
        box[d, 1] = round(hi * n) / n
    area = float(torch.prod(box[:, 1] - box[:, 0]))
    return box.float(), 1.0 - area
