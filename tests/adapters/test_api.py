"""Every adapter's ``loss`` is documented (Google style: Args, Returns, Raises) and fully typed, so
the API reference shows it (mkdocstrings leaves out members without a docstring)."""

from __future__ import annotations

import inspect
import typing

import pytest

import mmix_applied.adapters as adapters
from mmix_applied.adapters.base import Adapter

ADAPTERS = list(dict.fromkeys(getattr(adapters, n) for n in adapters.__all__  # TaskAdapter is Adapter
                              if isinstance(getattr(adapters, n), type) and issubclass(getattr(adapters, n), Adapter)))


def test_every_adapter_is_listed():
    assert {a.__name__ for a in ADAPTERS} >= {"Adapter", "Classification", "MultiLabel", "Regression",
                                              "Segmentation", "CTC", "LineCTC"}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
def test_loss_is_documented_and_typed(adapter):
    loss = adapter.__dict__.get("loss")
    assert loss is not None, f"{adapter.__name__} does not define loss()"
    doc = inspect.getdoc(loss) or ""
    sections = [line.strip() for line in doc.splitlines() if line.strip().endswith(":") and " " not in line.strip()]
    assert sections == ["Args:", "Returns:", "Raises:"], f"{adapter.__name__}.loss sections: {sections}"
    args = doc.split("Args:")[1].split("Returns:")[0]
    for name in ("output", "target", "plan"):
        assert f"{name}:" in args, f"{adapter.__name__}.loss documents no {name!r}"
    hints = typing.get_type_hints(loss, globalns=vars(inspect.getmodule(adapter)))
    assert set(hints) == {"output", "target", "plan", "return"}, f"{adapter.__name__}.loss hints: {sorted(hints)}"
    assert all(h is not typing.Any for k, h in hints.items() if k in ("plan", "return")), hints
