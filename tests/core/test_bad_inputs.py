"""Bad input to the mixing core: alpha, integer inputs at the ``input`` point, batches of one. Each
error has a clear type and a message that names the value and the fix.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmix_applied import ManifoldMixup
from mmix_applied.adapters import Classification
from tests.helpers.bad_inputs import TinyNet, no_network, says  # noqa: F401  (autouse fixture)


class _BytesIn(nn.Module):
    """Takes uint8 images and converts them itself: mixing at 'input' cannot touch them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head((x.float() / 255).flatten(1))


@pytest.mark.parametrize("alpha", [0, -1.0, math.nan, math.inf])
def test_alpha_not_positive(alpha):
    with pytest.raises(ValueError) as err:
        ManifoldMixup(TinyNet(), points=["input"], alpha=alpha)
    says(err, f"received {alpha!r}", "alpha must be a number > 0 and finite", "typical 0.2 to 2.0")


def test_integer_input_at_input_point_is_an_error_not_a_silent_unmixed_step():
    model = _BytesIn().train()
    mixer = ManifoldMixup(model, points=["input"], seed=0)
    x = torch.randint(0, 255, (4, 1, 4, 4), dtype=torch.uint8)
    with pytest.raises(TypeError) as err:
        mixer(x)
    says(err, "torch.uint8", "x.float() / 255")
    model.eval()
    assert model(x).shape == (4, 3)  # unmixed passes still accept it
    mixer.close()


def test_batch_size_one_mixes_with_itself():
    model = TinyNet().train()
    mixer = ManifoldMixup(model, points=["input", "conv"], seed=0)
    x, y = torch.randn(1, 1, 4, 4), torch.tensor([2])
    drawn = set()
    for _ in range(8):
        out, plan = mixer(x)
        drawn.add(plan.point)
        assert plan.perm.tolist() == [0]
        mixer.enabled = False
        plain, _ = mixer(x)
        mixer.enabled = True
        assert torch.equal(out, plain)  # lam*h + (1-lam)*h is h, exactly
        loss = Classification(3).loss(out, y, plan)
        assert loss.item() == pytest.approx(Classification(3).loss(plain, y).item(), abs=1e-6)
    assert drawn == {"input", "conv"}
    with pytest.raises(ValueError) as err:
        mixer.sample(0)
    says(err, "received 0", "int >= 1")
    mixer.close()
