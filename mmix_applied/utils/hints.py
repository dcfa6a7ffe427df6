"""The one "did you mean" hint used in error messages (config keys, recipe names, choices)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "did_you_mean"]


def did_you_mean(word: object, candidates: Iterable[object], *, n: int = 1, cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` for the closest candidates to ``word``, or ``""`` when none is close.

    Args:
        word: What the user wrote.
        candidates: The valid spellings.
        n: At most this many suggestions.
        cutoff: Similarity threshold of :func:`difflib.get_close_matches`.
    """
    close = close_matches(word, candidates, n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def close_matches(word: object, candidates: Iterable[object], *, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` candidates that look like ``word`` (:func:`difflib.get_close_matches`), best first."""
    return difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=cutoff)
