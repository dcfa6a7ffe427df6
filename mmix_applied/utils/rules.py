"""Value rules: a test and the words that say what is valid, defined once, where the value is owned.

The code that uses a value owns its rule: the mixing core owns ``alpha`` and ``prob``
(:mod:`mmix_applied.core.mixer`), each recipe its ``data`` and ``options`` keys
(``Recipe.range_rules``), the engine its own sections. The same rule object checks a value passed
in code (:meth:`Rule.check`: ``"alpha must be ...; received -1."``) and in a config
(:mod:`mmix_applied.engine.config.ranges`: ``"config key 'mix.alpha': must be ... (received -1.0)"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["ANY_INT", "ANY_NUMBER", "FRACTION", "Rule", "above", "at_least", "half_open", "one_of", "within"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A range: ``ok(value)`` is the test, ``text`` says what is valid (and how to fix it).

    ``text`` reads after the value's name: ``"must be >= 1 (e.g. 32)"``.
    """

    ok: Callable[[Any], bool]
    text: str

    def check(self, value: Any, name: str) -> Any:
        """Return ``value`` if it passes; else raise ``ValueError("{name} {text}; received {value!r}.")``."""
        if not self.ok(value):
            raise ValueError(f"{name} {self.text}; received {value!r}.")
        return value


def at_least(lo: float, fix: str = "") -> Rule:
    """``value >= lo``; ``fix`` is added to the text (e.g. ``" (0 turns it off)"``)."""
    return Rule(lambda v: v >= lo, f"must be >= {lo}{fix}")


def above(lo: float, fix: str = "") -> Rule:
    """``value > lo``."""
    return Rule(lambda v: v > lo, f"must be > {lo}{fix}")


def within(lo: float, hi: float, fix: str = "") -> Rule:
    """``lo <= value <= hi``."""
    return Rule(lambda v: lo <= v <= hi, f"must be in [{lo}, {hi}]{fix}")


def half_open(lo: float, hi: float, fix: str = "") -> Rule:
    """``lo <= value < hi``."""
    return Rule(lambda v: lo <= v < hi, f"must be in [{lo}, {hi}){fix}")


def one_of(*values: int) -> Rule:
    """``value`` is one of ``values``."""
    return Rule(lambda v: v in values, f"must be one of {', '.join(map(str, values))}")


#: Any integer (a key with no range, declared so that every numeric key has a rule).
ANY_INT = Rule(lambda v: True, "any integer")
#: Any (finite) number.
ANY_NUMBER = Rule(lambda v: True, "any finite number")
#: A share of the data held out (validation, test): in [0, 1).
FRACTION = half_open(0, 1, " (a share of the data: e.g. 0.1)")
