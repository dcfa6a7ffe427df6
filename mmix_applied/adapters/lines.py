"""Text lines for the CTC adapter: each line's true output length, and whether CTC has a path.

CTC targets are label sequences of different lengths and cannot be interpolated, so the *loss*
mixes (Moysset & Messina, "Manifold Mixup improves text recognition with CTC loss", ICDAR 2019):
``lam * CTC(out, y) + (1 - lam) * CTC(out, y[perm])`` (:class:`mmix_applied.adapters.CTC`). A
batch of padded lines needs each line's own output length, which :class:`LineCTC` passes on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mmix_applied.adapters.base import Adapter
from mmix_applied.adapters.ctc import CTC
from mmix_applied.core.plan import MixPlan

__all__ = ["LineCTC", "LineTargets", "ctc_feasible"]


class LineTargets(NamedTuple):
    """What the loss and the metrics need about a batch of lines."""

    targets: Tensor
    target_lengths: Tensor
    output_lengths: Tensor
    texts: list[str]


def ctc_feasible(targets: Tensor, target_lengths: Tensor, output_lengths: Tensor) -> Tensor:
    """Per line, whether CTC has a path: ``T >= len(y) + (number of repeated neighbours in y)``."""
    mask = torch.arange(targets.shape[1], device=targets.device)[None, 1:] < target_lengths[:, None]
    repeats = ((targets[:, 1:] == targets[:, :-1]) & mask).sum(dim=1)
    return output_lengths >= target_lengths + repeats


class LineCTC(Adapter):
    """The core's ``CTC`` adapter fed with each line's true output length (from :class:`LineTargets`).

    The core mixes the losses and, under a plan, gives both terms ``max(T_i, T_perm[i])`` steps,
    since a mixed line holds its partner's content too.

    Args:
        ctc: The :class:`mmix_applied.adapters.CTC` adapter.
    """

    def __init__(self, ctc: CTC) -> None:
        super().__init__()
        self.ctc = ctc

    def loss(self, output: Tensor, target: LineTargets, plan: MixPlan | None = None) -> Tensor:
        """The (mixed) CTC loss of ``(T, B, C)`` log-probs against the lines of ``target``.

        Args:
            output: ``(T, B, C)`` log-probabilities of the padded batch of lines.
            target: The batch's :class:`LineTargets`; its ``output_lengths`` give each line's own
                number of output steps.
            plan: The step's :class:`~mmix_applied.core.plan.MixPlan`; ``None`` for an unmixed step.

        Returns:
            :meth:`CTC.loss <mmix_applied.adapters.CTC.loss>` of ``(output, output_lengths)``
            against ``(targets, target_lengths)``, a float32 scalar.

        Raises:
            TypeError: As :meth:`CTC.loss <mmix_applied.adapters.CTC.loss>`.
            ValueError: As :meth:`CTC.loss <mmix_applied.adapters.CTC.loss>`.
        """
        lengths = target.output_lengths.to(output.device)
        return self.ctc.loss((output, lengths), (target.targets, target.target_lengths), plan)
