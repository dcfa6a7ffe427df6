"""Mix points: which cuts a model offers, taken from the model's own description.

A point is ``"input"`` or the qualified name of a module (as in ``model.named_modules()``) whose
output is the cut. Defaults come, in order, from the ``mix_points`` protocol (our own models and
any user module), then from resolvers that read what a library's models say about themselves:
timm's ``feature_info``, smp's encoder contract (the features its encoder returns), MONAI's
network structure. Nothing is guessed from class names. Those resolvers live beside their model
family in :mod:`mmix_applied.models` and register here through :func:`register_point_resolver`;
the core imports no model library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from torch import nn

from mmix_applied.utils.hints import close_matches

from .functional import BatchDims

__all__ = [
    "INPUT",
    "POINT_SETS",
    "PointSets",
    "check_points",
    "default_points",
    "validate_points",
    "resolve_batch_dims",
    "register_point_resolver",
]

INPUT = "input"

#: The named point sets: ``auto`` (the family's default) and ``all`` (input + every declared stage).
POINT_SETS = ("auto", "all")

_POINTS_FORM = ("'auto' (the family's default), 'all' (the input and every stage the model declares) or a "
                "list of 'input' and module names, e.g. ['input', 'layer1']")


def check_points(points: object) -> None:
    """The rule of a ``points`` argument before any model is seen: a name of :data:`POINT_SETS` or a
    non-empty list of strings (``ManifoldMixup(points=...)`` and the config's ``mix.points``).

    Which module names are valid depends on the model: :func:`validate_points` checks them.

    Raises:
        TypeError: ``points`` is neither a string nor a list of strings.
        ValueError: An unknown set name, or an empty list.
    """
    if isinstance(points, str):
        if points not in POINT_SETS:
            raise ValueError(f"points must be {_POINTS_FORM}; received {points!r}.")
        return
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, str) for p in points):
        raise TypeError(f"points must be {_POINTS_FORM}; received {points!r}.")
    if not points:
        raise ValueError("points is empty; name at least one point, e.g. points=['input'].")


class PointSets(NamedTuple):
    """What a resolver (or a model's ``mix_points``) may answer when its default is a subset.

    Attributes:
        auto: The default points (``points="auto"``), e.g. the paper's first two stages.
        all: Every declared stage (``points="all"``).
    """

    auto: list[str]
    all: list[str]


PointResolver = Callable[[nn.Module], "list[str] | PointSets | None"]
# Library-specific resolvers live beside their model family (mmix_applied.models.timm_models,
# .smp_models, .monai_nets) and register themselves when mmix_applied.models is imported, which
# the package root does; none of them imports its library to answer.
_RESOLVERS: list[PointResolver] = []


def register_point_resolver(fn: PointResolver) -> PointResolver:
    """Register ``fn(model) -> list[str] | PointSets | None`` (None: not my kind of model).

    A plain list means ``auto`` and ``all`` are the same set. Usable as a decorator.
    """
    _RESOLVERS.append(fn)
    return fn


def default_points(model: nn.Module, *, which: Literal["auto", "all"] = "auto") -> list[str]:
    """The eligible points of ``model``: ``"input"`` first, then the model's declared stages.

    Args:
        model: The network.
        which: ``"auto"``: the family's default set (timm CNNs: the paper's {input, stage 1,
            stage 2}); ``"all"``: the input and every stage the model declares.

    Raises:
        ValueError: when the model does not describe itself (the message says how to name
            points), or ``which`` is not ``"auto"`` or ``"all"``.
    """
    if which not in POINT_SETS:
        raise ValueError(f"which must be one of {POINT_SETS}; received {which!r}.")
    declared = getattr(model, "mix_points", None)
    names: list[str] | PointSets | None
    if declared is not None:
        names = declared() if callable(declared) else declared
    else:
        names = None
        for resolver in _RESOLVERS:
            names = resolver(model)
            if names is not None:
                break
    if names is None:
        raise ValueError(
            f"points='{which}' cannot tell the mix points of a {type(model).__name__}: it is not a timm, "
            "smp or MONAI model and has no `mix_points` attribute. Pass points=[...] with 'input' and/or "
            "module names from model.named_modules() at block boundaries (e.g. points=['input', "
            "'layer1', 'layer2']), or give the model a `mix_points` list."
        )
    if isinstance(names, PointSets):
        names = names.auto if which == "auto" else names.all
    return [INPUT] + [n for n in dict.fromkeys(names) if n != INPUT]


def validate_points(model: nn.Module, points: Sequence[str]) -> list[str]:
    """Check user-named points against ``model.named_modules()``.

    Raises:
        TypeError: ``points`` is not a list of strings.
        ValueError: an empty list; an unknown, duplicated or nested point (the message lists close
            valid names).
    """
    if isinstance(points, str):  # a set name is default_points' to resolve
        raise TypeError(f"validate_points takes a list of point names; received {points!r} (for a point set, "
                        "call default_points(model, which=...))")
    check_points(points)
    points = list(points)
    valid = [n for n, _ in model.named_modules() if n]
    known = set(valid)
    for p in points:
        if p != INPUT and p not in known:
            close = close_matches(p, valid + [INPUT], n=5, cutoff=0.5)
            shown = ", ".join(repr(v) for v in valid[:25]) + (", ..." if len(valid) > 25 else "")
            raise ValueError(
                f"unknown mix point {p!r} for {type(model).__name__}. "
                + (f"Did you mean {', '.join(map(repr, close))}? " if close else "")
                + f"Valid points are 'input' and the module names of model.named_modules(): {shown}."
            )
    dupes = sorted({p for p in points if points.count(p) > 1})
    if dupes:
        raise ValueError(f"mix points must be distinct; received duplicates {dupes} in {points}.")
    for p in points:
        for q in points:
            if p != INPUT and q != p and q.startswith(p + "."):
                raise ValueError(
                    f"mix point {q!r} lies inside point {p!r}; a cut is a module boundary, so name "
                    "either the block or a module inside it, not both."
                )
    return points


def resolve_batch_dims(model: nn.Module, point: str, override: dict[str, BatchDims] | None = None) -> BatchDims:
    """The batch dimension(s) of ``point``'s output.

    In order: ``override`` (the mixer's ``batch_dims``), the model's ``mix_batch_dims`` attribute,
    the default of the module type (recurrent modules: the sequence at dim 1 unless
    ``batch_first``, hidden states at dim 1), else 0.
    """
    for table in (override, getattr(model, "mix_batch_dims", None)):
        if table and point in table:
            return table[point]
    if point != INPUT:
        module = model.get_submodule(point)
        if isinstance(module, nn.RNNBase):
            return (0 if module.batch_first else 1, 1)
    return 0
