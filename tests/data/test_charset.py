"""Charset encoding/decoding and greedy CTC decoding, checked by hand."""

import pytest
import torch
import torch.nn.functional as F

from mmix_applied.data.charset import Charset, UnknownCharacterError, ctc_greedy_decode


def test_charset_from_texts_and_roundtrip():
    cs = Charset.from_texts(["ba", "cab", "a"])
    assert cs.chars == "abc" and len(cs) == 3 and cs.num_classes == 4
    assert cs.encode("cab") == [3, 1, 2]  # index 0 is the blank
    assert cs.decode([3, 0, 1, 2]) == "cab"
    assert Charset.from_texts(["ba", "cab"], sort=False).chars == "bac"
    assert Charset("0123456789") == Charset.from_texts(["9876543210"])


def test_charset_rejects_bad_definitions():
    with pytest.raises(ValueError, match="duplicate"):
        Charset("abca")
    with pytest.raises(ValueError, match="single characters"):
        Charset(["ab", "c"])
    with pytest.raises(ValueError, match="outside the charset"):
        Charset("ab").decode([3])


def test_unknown_characters_are_reported_with_their_source():
    cs = Charset("0123456789")
    with pytest.raises(UnknownCharacterError) as info:
        cs.encode("12a4", source="train.csv:7")
    assert info.value.unknown == {"a": [("train.csv:7", 2)]}
    assert "train.csv:7@2" in str(info.value)
    with pytest.raises(UnknownCharacterError) as info:
        cs.encode_batch(["12", "x3x", "4 5"], sources=["a.png", "b.png", "c.png"])
    assert info.value.unknown == {"x": [("b.png", 0), ("b.png", 2)], " ": [("c.png", 1)]}
    assert cs.encode("1a2", unknown="skip") == [2, 3]
    assert cs.find_unknown(["ok", "1"]) == {"o": [("text 0", 0)], "k": [("text 0", 1)]}


def test_encode_batch_feeds_ctc_loss():
    cs = Charset("abc")
    targets, lengths = cs.encode_batch(["ab", "c", "abca"])
    assert targets.tolist() == [[1, 2, 0, 0], [3, 0, 0, 0], [1, 2, 3, 1]]
    assert lengths.tolist() == [2, 1, 4]
    log_probs = torch.randn(6, 3, cs.num_classes).log_softmax(-1)
    loss = F.ctc_loss(log_probs, targets, torch.full((3,), 6), lengths, reduction="none")
    assert torch.isfinite(loss).all()


def test_greedy_decode_by_hand():
    # Per-step argmax paths (blank = 0):
    #   sample 0: 1 1 0 1 2 2 -> merge repeats: 1 0 1 2 -> drop blanks: 1 1 2
    #   sample 1: 0 3 3 3 0 0 -> 3, but only its first 2 steps are valid: 0 3 -> 3
    paths = torch.tensor([[1, 1, 0, 1, 2, 2], [0, 3, 3, 3, 0, 0]]).T  # (T, B)
    scores = F.one_hot(paths, 4).float() * 5.0 - 1.0
    assert ctc_greedy_decode(scores) == [[1, 1, 2], [3]]
    assert ctc_greedy_decode(scores.log_softmax(-1), torch.tensor([6, 2])) == [[1, 1, 2], [3]]
    assert ctc_greedy_decode(scores, torch.tensor([0, 1])) == [[], []]
    assert Charset("abc").decode_ctc(scores) == ["aab", "c"]
    with pytest.raises(ValueError, match="lengths"):
        ctc_greedy_decode(scores, torch.tensor([7, 1]))
    with pytest.raises(ValueError, match=r"\(T, B, C\)"):
        ctc_greedy_decode(scores[0])
