"""Charsets for CTC text recognition and greedy CTC decoding (Graves et al., ICML 2006).

Index 0 is the CTC blank; the characters take indices ``1..len(charset)``, so a recognizer has
``len(charset) + 1`` outputs. Unknown characters are reported with where they came from (the
source name, e.g. a file and line, and the position in the text), all at once.

Beam search is not provided. The good CTC beam decoder with lexicon support is torchaudio's
``ctc_decoder`` (flashlight-text underneath), but torchaudio is in maintenance mode and each release
is tied to one torch version, with none for the torch this project uses; ``flashlight-text``'s own
bindings (last release 2024) need a lexicon/LM setup of their own, and ``pyctcdecode`` (last
release 2023) targets word-level speech with KenLM. Greedy decoding returns the labelling of
the most probable path (best-path decoding) and is what the CER metrics here use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from mmix_applied.errors import MmixError

__all__ = ["BLANK", "Charset", "UnknownCharacterError", "ctc_greedy_decode"]

BLANK = 0


class UnknownCharacterError(MmixError, ValueError):
    """Characters outside the charset, each listed with its source and positions.

    Attributes:
        unknown: ``{char: [(source, position), ...]}``.

    Args:
        unknown: See the attribute.
        charset: The charset checked against.
        fix: The advice ending the message (a config-driven caller names its config keys); default
            the Python arguments (:attr:`FIX`).
    """

    #: The fix suggested when none is given (for Python callers of :meth:`Charset.encode`).
    FIX = ("Build the charset from all transcriptions (Charset.from_texts), add the characters, "
           "or encode with unknown='skip'.")

    def __init__(self, unknown: dict[str, list[tuple[str, int]]], charset: Charset, *, fix: str | None = None) -> None:
        self.unknown = unknown
        parts = []
        for ch, where in unknown.items():
            shown = ", ".join(f"{src}@{pos}" for src, pos in where[:5])
            more = f" and {len(where) - 5} more" if len(where) > 5 else ""
            parts.append(f"{ch!r} (U+{ord(ch):04X}) at {shown}{more}")
        super().__init__(
            f"{len(unknown)} character(s) not in the charset of {len(charset)}: " + "; ".join(parts)
            + ". " + (fix or self.FIX)
        )


class Charset:
    """An ordered set of characters; index 0 is reserved for the CTC blank.

    Args:
        chars: the characters, in index order (a string or a sequence of single characters);
            duplicates are an error.
    """

    def __init__(self, chars: str | Sequence[str]) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"a charset holds single characters; received {bad[:5]!r}.")
        dupes = sorted({c for c in chars if chars.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate characters in the charset: {dupes!r}.")
        if not chars:
            raise ValueError("a charset needs at least one character.")
        self.chars = "".join(chars)
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, sort: bool = True) -> Charset:
        """The characters that occur in ``texts`` (sorted by code point, or in order of first use)."""
        seen = dict.fromkeys(c for t in texts for c in t)
        return cls(sorted(seen) if sort else list(seen))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Charset) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Charset({self.chars!r})"

    @property
    def num_classes(self) -> int:
        """Outputs a recognizer needs: the characters plus the blank."""
        return len(self.chars) + 1

    def find_unknown(
        self, texts: Iterable[str], *, sources: Iterable[str] | None = None
    ) -> dict[str, list[tuple[str, int]]]:
        """Every character of ``texts`` outside the charset, with ``(source, position)`` of each use.

        Args:
            texts: the transcriptions.
            sources: one name per text (a file, ``"train.csv:12"``...); default the text's index.
        """
        texts = list(texts)
        names = [f"text {i}" for i in range(len(texts))] if sources is None else [str(s) for s in sources]
        if len(names) != len(texts):
            raise ValueError(f"received {len(names)} sources for {len(texts)} texts; give one source per text.")
        unknown: dict[str, list[tuple[str, int]]] = {}
        for text, src in zip(texts, names):
            for pos, ch in enumerate(text):
                if ch not in self._index:
                    unknown.setdefault(ch, []).append((src, pos))
        return unknown

    def encode(self, text: str, *, source: str | None = None, unknown: str = "error") -> list[int]:
        """Indices (1-based, 0 is the blank) of the characters of ``text``.

        Args:
            text: a transcription.
            source: where the text came from, for the error message.
            unknown: ``"error"`` raises :class:`UnknownCharacterError`; ``"skip"`` drops them.
        """
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip'; received {unknown!r}.")
        if unknown == "error":
            missing = self.find_unknown([text], sources=[source if source is not None else "text"])
            if missing:
                raise UnknownCharacterError(missing, self)
        return [self._index[c] for c in text if c in self._index]

    def encode_batch(
        self, texts: Sequence[str], *, sources: Sequence[str] | None = None, unknown: str = "error"
    ) -> tuple[Tensor, Tensor]:
        """Padded targets and lengths for ``F.ctc_loss`` / the ``CTC`` adapter.

        Returns:
            ``(targets (B, S) long, zero-padded; lengths (B,) long)``.

        Raises:
            UnknownCharacterError: listing every unknown character of the whole batch.
        """
        if unknown == "error":
            missing = self.find_unknown(texts, sources=sources)
            if missing:
                raise UnknownCharacterError(missing, self)
        encoded = [self.encode(t, unknown="skip") for t in texts]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        targets = torch.zeros(len(encoded), max([len(e) for e in encoded] + [1]), dtype=torch.long)
        for i, e in enumerate(encoded):
            targets[i, : len(e)] = torch.tensor(e, dtype=torch.long)
        return targets, lengths

    def decode(self, indices: Iterable[int]) -> str:
        """Characters of ``indices``; blanks (0) are dropped, no CTC collapsing is done."""
        out = []
        for i in indices:
            i = int(i)
            if i == BLANK:
                continue
            if not 0 < i <= len(self.chars):
                raise ValueError(f"index {i} is outside the charset (1..{len(self.chars)}, 0 = blank).")
            out.append(self.chars[i - 1])
        return "".join(out)

    def decode_ctc(self, log_probs: Tensor, lengths: Tensor | None = None) -> list[str]:
        """Greedy CTC transcription of ``(T, B, C)`` network output, one string per sample."""
        return [self.decode(seq) for seq in ctc_greedy_decode(log_probs, lengths)]


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor | None = None, *, blank: int = BLANK) -> list[list[int]]:
    """Best-path CTC decoding: argmax per step, merge repeats, drop blanks.

    Args:
        log_probs: ``(T, B, C)`` scores (log-probabilities or logits; only the argmax is used).
        lengths: ``(B,)`` valid steps per sample (from ``CRNN.output_lengths``); default all ``T``.
        blank: the blank index.

    Returns:
        One list of label indices per sample.
    """
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be (T, B, C); received shape {tuple(log_probs.shape)}.")
    steps, batch = log_probs.shape[:2]
    best = log_probs.detach().argmax(dim=-1).cpu()  # (T, B)
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long)
    lengths = torch.as_tensor(lengths).cpu().long()
    if lengths.shape != (batch,) or bool((lengths > steps).any()) or bool((lengths < 0).any()):
        raise ValueError(f"lengths must be (B,)={batch} values in [0, {steps}]; received {lengths.tolist()}.")
    out = []
    for b in range(batch):
        path = best[: int(lengths[b]), b]
        if path.numel() == 0:
            out.append([])
            continue
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(i) for i in path[keep] if int(i) != blank])
    return out
