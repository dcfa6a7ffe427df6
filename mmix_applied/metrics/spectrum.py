"""Flattening of class-conditional representations (Verma et al., ICML 2019, section 3).

Manifold Mixup's theory says that mixing at a layer flattens each class's hidden states there:
the states of one class concentrate in fewer directions, so their covariance has fewer large
singular values. For the states ``H_c`` (``N_c x D``) of class ``c`` at a point, centred on their
mean, :func:`class_spectra` gives the singular values and the number of directions that hold
``variance`` (90 %) of the class's variance -- the smallest ``k`` with
``sum_{i<=k} s_i^2 >= 0.9 sum_i s_i^2`` -- and its mean over classes. Fewer directions: flatter.

:func:`collect_states` gathers the states at a named module with a forward hook (eval mode, no
grad); :func:`mmix_applied.reports.figures.plot_spectra` overlays the spectra of two or more runs.
Nothing here imports Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmix_applied.utils.hints import did_you_mean

__all__ = ["ClassSpectra", "class_spectra", "collect_states", "directions_for"]


@dataclass(frozen=True)
class ClassSpectra:
    """Per-class singular values of centred hidden states and the directions holding ``variance``.

    Attributes:
        singular_values: Class -> descending singular values (float64, length ``min(N_c, D)``).
        directions: Class -> directions holding ``variance`` of that class's variance.
        counts: Class -> samples.
        mean_directions: Mean of ``directions`` over the classes counted.
        variance: The fraction used (0.9).
        skipped: Classes left out (fewer than 2 samples, or all states equal).
    """

    singular_values: dict[int, Tensor]
    directions: dict[int, int]
    counts: dict[int, int]
    mean_directions: float
    variance: float = 0.9
    skipped: list[int] = field(default_factory=list)

    def as_dict(self, *, values: bool = False) -> dict[str, Any]:
        """JSON-ready form; the singular values only with ``values=True``."""
        out = {"mean_directions": self.mean_directions, "variance": self.variance,
               "directions": {str(k): v for k, v in self.directions.items()},
               "counts": {str(k): v for k, v in self.counts.items()}, "skipped": list(self.skipped)}
        if values:
            out["singular_values"] = {str(k): v.tolist() for k, v in self.singular_values.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassSpectra:
        """Rebuild from :meth:`as_dict` output written with ``values=True``."""
        if "singular_values" not in data:
            raise KeyError("ClassSpectra.from_dict needs 'singular_values' (write it with as_dict(values=True))")
        return cls({int(k): torch.tensor(v, dtype=torch.float64) for k, v in data["singular_values"].items()},
                   {int(k): int(v) for k, v in data["directions"].items()},
                   {int(k): int(v) for k, v in data["counts"].items()}, float(data["mean_directions"]),
                   float(data["variance"]), [int(c) for c in data.get("skipped", [])])


def directions_for(singular_values: Tensor, variance: float = 0.9) -> int:
    """Smallest ``k`` whose top ``k`` squared singular values hold ``variance`` of their sum."""
    energy = singular_values.double() ** 2
    total = energy.sum()
    if total <= 0:
        return 0
    cumulative = torch.cumsum(energy, 0) / total
    return int(torch.searchsorted(cumulative, torch.tensor(variance, dtype=torch.float64) - 1e-12).item()) + 1


def class_spectra(states: Tensor, labels: Tensor, *, variance: float = 0.9) -> ClassSpectra:
    """Singular values of each class's centred states and the directions holding ``variance``.

    Args:
        states: ``(N, D...)`` hidden states (flattened to ``(N, D)``).
        labels: ``(N,)`` integer classes.
        variance: Fraction of a class's variance the directions must hold, in ``(0, 1]``.

    Raises:
        ValueError: Shapes that disagree, non-integer labels, or no class with two samples.
    """
    if not isinstance(states, Tensor) or states.dim() < 2:
        shape = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
        raise ValueError(f"states must be a (N, D...) tensor; received {shape}")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.reshape(-1).numel() != states.shape[0]:
        what = (f"dtype {labels.dtype}, {labels.numel()} values" if isinstance(labels, Tensor)
                else type(labels).__name__)
        raise ValueError(f"labels must be {states.shape[0]} integer classes, one per state; received {what}")
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1]; received {variance!r}. Typical: 0.9")
    x = states.detach().reshape(states.shape[0], -1).double().cpu()
    y = labels.detach().reshape(-1).long().cpu()
    values, directions, counts, skipped = {}, {}, {}, []
    for c in torch.unique(y).tolist():
        rows = x[y == c]
        counts[c] = int(rows.shape[0])
        centred = rows - rows.mean(0, keepdim=True)
        s = torch.linalg.svdvals(centred) if rows.shape[0] > 1 else torch.zeros(0, dtype=torch.float64)
        if rows.shape[0] < 2 or float(s.max()) <= 1e-12 * max(1.0, float(rows.abs().max())):
            skipped.append(c)
            continue
        values[c], directions[c] = s, directions_for(s, variance)
    if not directions:
        raise ValueError(f"no class has two distinct states (counts per class: {counts}); pass more samples")
    mean = sum(directions.values()) / len(directions)
    return ClassSpectra(values, directions, counts, float(mean), float(variance), skipped)


def _first_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Tensor):
                return item
    if isinstance(value, Mapping):
        for item in value.values():
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"the point's output holds no tensor; received {type(value).__name__}")


def _default_split(batch: Any) -> tuple[Any, Tensor]:
    if isinstance(batch, Mapping):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


@torch.no_grad()
def collect_states(model: nn.Module, loader: Iterable[Any], point: str, *,
                   split_batch: Callable[[Any], tuple[Any, Tensor]] = _default_split,
                   max_samples: int | None = None, device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Run ``model`` over ``loader`` in eval mode and keep the states at the module ``point``.

    Args:
        model: The network.
        loader: Batches; ``split_batch(batch)`` gives ``(inputs, labels)`` (default: ``batch[0], batch[1]``).
        point: A name from ``model.named_modules()``, or ``"input"`` for the inputs themselves.
        split_batch: How to take a batch apart.
        max_samples: Stop after this many samples.
        device: Where to run (default: the model's parameters' device).

    Returns:
        ``(states (N, D...) float32 on the CPU, labels (N,))``. The model's train/eval mode is restored.
    """
    names = dict(model.named_modules())
    if point != "input" and point not in names:
        hint = did_you_mean(point, names, n=3)
        raise KeyError(f"point {point!r} is not a module of the model.{hint} Valid: 'input' or one of "
                       f"{[n for n in names if n][:20]}{' ...' if len(names) > 21 else ''}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    captured: list[Tensor] = []
    handle = None
    if point != "input":
        handle = names[point].register_forward_hook(lambda m, i, o: captured.append(_first_tensor(o).detach()))
    was_training = model.training
    model.eval()
    states, labels, seen = [], [], 0
    try:
        for batch in loader:
            x, y = split_batch(batch)
            x = x.to(device)
            captured.clear()
            model(x)
            if point == "input":
                h = x
            elif not captured:
                raise RuntimeError(f"the module {point!r} did not run in the forward pass; pick a point on the "
                                   "path from input to output")
            else:
                h = captured[-1]
            states.append(h.float().cpu())
            labels.append(torch.as_tensor(y).reshape(-1).cpu())
            seen += h.shape[0]
            if max_samples is not None and seen >= max_samples:
                break
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    if not states:
        raise ValueError("the loader gave no batches")
    s, y = torch.cat(states), torch.cat(labels)
    if max_samples is not None:
        s, y = s[:max_samples], y[:max_samples]
    return s, y
