"""Damaged pretrained-weights files (truncated safetensors or .pth, junk bytes): a clear error that
names the file and the fix, and the file is left as it was (bytes and mtime).
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.bad_inputs import no_network, says, snapshot, truncate  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("kind", ["truncated .safetensors", "truncated .pth", "junk .pth"])
def test_damaged_pretrained_weights_file(tmp_path, kind):
    from safetensors.torch import save_file

    from mmix_applied.models import create_model

    state = {"w": torch.arange(4096.0), "b": torch.ones(8)}
    if kind == "truncated .safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
        truncate(path)
    elif kind == "truncated .pth":
        path = tmp_path / "w.pth"
        torch.save(state, path)
        truncate(path)
    else:
        path = tmp_path / "w.pth"
        path.write_bytes(b"not a checkpoint")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        create_model("timm", "test_resnet", num_classes=3, in_channels=1, pretrained=path)
    says(err, str(path), "truncated, corrupt", "export the weights again")
    assert snapshot(tmp_path) == before
