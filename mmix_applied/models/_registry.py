"""The model-family registry behind :func:`create_model` and :func:`list_models`.

A family is a builder ``build(name, *, num_classes, in_channels, **options) -> nn.Module`` plus a
function that lists its model names. Families are registered with :func:`register_family` (usable
as a decorator, warning on overwrite, as timm's ``_registry.py`` does) and listed with fnmatch
patterns over ``"family/name"`` strings.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

__all__ = [
    "ModelFamily",
    "register_family",
    "get_family",
    "list_families",
    "list_models",
    "close_matches",
]

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelFamily:
    """One registered family of models.

    Attributes:
        name: the family's key in configs (``"timm"``, ``"smp"``, ...).
        build: ``build(name, *, num_classes, in_channels, **options) -> nn.Module``.
        names: returns the model names the family can build (without the family prefix).
        description: one line shown in docs and errors.
    """

    name: str
    build: Builder
    names: Callable[[], Iterable[str]]
    description: str = ""


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(
    name: str,
    build: Builder | None = None,
    *,
    names: Callable[[], Iterable[str]],
    description: str = "",
) -> Builder | Callable[[Builder], Builder]:
    """Register a model family; call directly or use as a decorator on the builder.

    Args:
        name: family key, e.g. ``"mynets"``; ``create_model("mynets", ...)`` then dispatches here.
        build: the builder; omit it to use this function as a decorator.
        names: returns the names the family can build, for :func:`list_models` and error messages.
        description: one line describing the family.

    Returns:
        The builder (so the decorator leaves the function unchanged).
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a family name must be a non-empty str without '/'; received {name!r}.")

    def add(fn: Builder) -> Builder:
        if not callable(fn):
            raise TypeError(f"build must be callable; received {type(fn).__name__}.")
        if name in _FAMILIES:
            warnings.warn(f"model family {name!r} is registered again; the new builder replaces the old one.")
        _FAMILIES[name] = ModelFamily(name=name, build=fn, names=names, description=description)
        return fn

    return add if build is None else add(build)


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` candidates that look like ``word`` (difflib), best first."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)


def get_family(family: str) -> ModelFamily:
    """The registered family called ``family``.

    Raises:
        ValueError: unknown family; the message lists the registered ones and close matches.
    """
    if family in _FAMILIES:
        return _FAMILIES[family]
    close = close_matches(str(family), _FAMILIES)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown model family {family!r}.{hint} Registered families: {sorted(_FAMILIES)}; "
        "add one with mmix_applied.models.register_family."
    )


def list_families() -> list[str]:
    """The registered family names, sorted."""
    return sorted(_FAMILIES)


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Model names as ``"family/name"`` strings that match an fnmatch ``pattern``.

    Args:
        pattern: matched against ``"family/name"`` (``"timm/resnet*"``, ``"*/unet"``); a pattern
            without ``/`` is matched against the bare name as well.
        family: restrict the listing to one family.

    Returns:
        Sorted ``"family/name"`` strings.
    """
    families = [get_family(family)] if family is not None else [_FAMILIES[k] for k in sorted(_FAMILIES)]
    out = []
    for fam in families:
        for model_name in fam.names():
            full = f"{fam.name}/{model_name}"
            if fnmatch.fnmatchcase(full, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(model_name, pattern)):
                out.append(full)
    return sorted(out)
