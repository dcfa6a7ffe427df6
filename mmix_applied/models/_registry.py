"""The model-family registry behind :func:`create_model` and :func:`list_models`.

A family is a builder ``build(name, *, num_classes, in_channels, **options) -> nn.Module`` plus a
function that lists its model names. Families are registered with :func:`register_family` (usable
as a decorator, warning on overwrite, as timm's ``_registry.py`` does) and listed with fnmatch
patterns over ``"family/name"`` strings; :func:`resolve_model_name` turns the printed
``"family/name"`` form (or a bare name that one family alone has) back into the two parts.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from mmix_applied.errors import MmixWarning
from mmix_applied.utils.hints import close_matches as _close_matches

__all__ = [
    "ModelFamily",
    "register_family",
    "get_family",
    "list_families",
    "list_models",
    "close_matches",
    "resolve_model_name",
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
        contains: says whether the family builds a name that ``names`` does not list (timm: a
            name with a pretrained tag, ``"resnet18.a1_in1k"``); default: membership in ``names()``.
    """

    name: str
    build: Builder
    names: Callable[[], Iterable[str]]
    description: str = ""
    contains: Callable[[str], bool] | None = None

    def has(self, model_name: str) -> bool:
        """Whether this family builds ``model_name``."""
        if self.contains is not None:
            return bool(self.contains(model_name))
        return model_name in set(self.names())


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(
    name: str,
    build: Builder | None = None,
    *,
    names: Callable[[], Iterable[str]],
    description: str = "",
    contains: Callable[[str], bool] | None = None,
) -> Builder | Callable[[Builder], Builder]:
    """Register a model family; call directly or use as a decorator on the builder.

    Args:
        name: family key, e.g. ``"mynets"``; ``create_model("mynets", ...)`` then dispatches here.
        build: the builder; omit it to use this function as a decorator.
        names: returns the names the family can build, for :func:`list_models` and error messages.
        description: one line describing the family.
        contains: optional test for names the listing leaves out (see :class:`ModelFamily`).

    Returns:
        The builder (so the decorator leaves the function unchanged).
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a family name must be a non-empty str without '/'; received {name!r}.")

    def add(fn: Builder) -> Builder:
        if not callable(fn):
            raise TypeError(f"build must be callable; received {type(fn).__name__}.")
        if name in _FAMILIES:
            warnings.warn(f"model family {name!r} is registered again; the new builder replaces the old one.",
                          MmixWarning, stacklevel=2)
        _FAMILIES[name] = ModelFamily(name=name, build=fn, names=names, description=description,
                                      contains=contains)
        return fn

    return add if build is None else add(build)


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` candidates that look like ``word`` (difflib), best first."""
    return _close_matches(word, candidates, n=n, cutoff=0.6)


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
        Sorted ``"family/name"`` strings; :func:`~mmix_applied.models.create_model` takes each as
        it is (``create_model("smp/unet", num_classes=2)``).
    """
    families = [get_family(family)] if family is not None else [_FAMILIES[k] for k in sorted(_FAMILIES)]
    out = []
    for fam in families:
        for model_name in fam.names():
            full = f"{fam.name}/{model_name}"
            if fnmatch.fnmatchcase(full, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(model_name, pattern)):
                out.append(full)
    return sorted(out)


def resolve_model_name(family: str, name: str | None = None) -> tuple[str, str]:
    """``(family, name)`` from either form :func:`create_model` accepts.

    Args:
        family: a family (``"smp"``) with ``name`` given; or, with ``name`` None, the form
            :func:`list_models` prints (``"smp/unet"``, ``"timm/resnet18.a1_in1k"``), or a bare name
            that exactly one family builds (``"basicunet"``).
        name: the model within ``family``, or None.

    Raises:
        TypeError: ``family`` or ``name`` is not a str.
        ValueError: an unknown family or name (with close matches), a bare name that several
            families build, or a ``"family/name"`` form given together with ``name``.
    """
    if not isinstance(family, str):
        raise TypeError(f"the model family must be a str such as 'timm' or 'smp/unet'; received {family!r}.")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"the model name must be a str such as 'resnet18'; received {name!r}.")
    if name is not None:
        if "/" in family:
            raise ValueError(
                f"received the model as family={family!r} and name={name!r}; pass either the printed form "
                f"alone (create_model({family!r}, ...)) or the family and the name apart "
                f"(create_model({family.partition('/')[0]!r}, {name!r}, ...))."
            )
        return family, name
    if "/" in family:
        head, _, tail = family.partition("/")
        fam = get_family(head)
        if not tail:
            raise ValueError(f"received {family!r} with no model name after '/'; list the names with "
                             f"list_models({head + '/*'!r}).")
        return fam.name, tail
    owners = [fam.name for _, fam in sorted(_FAMILIES.items()) if fam.has(family)]
    if len(owners) == 1:
        return owners[0], family
    if owners:
        forms = ", ".join(repr(f"{owner}/{family}") for owner in owners)
        raise ValueError(f"model name {family!r} is ambiguous: {forms} exist in several families; pass one of "
                         f"them, e.g. create_model({owners[0] + '/' + family!r}, ...).")
    if family in _FAMILIES:
        raise ValueError(f"received the family {family!r} without a model name; pass "
                         f"create_model({family!r}, name, ...) or one of list_models({family + '/*'!r}).")
    full = list_models()
    bare = {}
    for item in full:
        bare.setdefault(item.partition("/")[2], item)
    close = [bare[n] for n in close_matches(family, bare)]
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown model {family!r}: no registered family ({', '.join(sorted(_FAMILIES))}) builds it.{hint} "
        "Pass 'family/name' as list_models() prints it, or create_model(family, name, ...)."
    )
