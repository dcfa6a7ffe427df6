"""Issue 22 (round 3): refusing pretrained weights that hold unsafe objects never passes on torch's
advice to load them with weights_only=False (it "will likely succeed", by running the file's code)."""

from __future__ import annotations

import os

import pytest
import torch

from mmix_applied.models.weights import read_state_dict


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_unsafe_pretrained_weights_are_refused_without_torchs_advice(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.ones(2), "extra": _Payload()}, path)
    with pytest.raises(ValueError) as err:
        read_state_dict(path)
    text = str(err.value)
    assert "Detail: Trying to load unsupported GLOBAL posix.system" in text
    assert "weights_only=False" not in text.replace("weights_only=True", "")
    assert "weights_only` set to `False`" not in text and "will likely succeed" not in text
