"""Bad targets and outputs for the adapters: NaN/Inf targets, masks outside the classes, wrong
dtypes, shapes and channels, CTC targets that cannot be aligned. Each error has a clear type and a
message that names the value and the fix.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmix_applied import MixPlan
from mmix_applied.adapters import CTC, Classification, Regression, Segmentation
from tests.helpers.bad_inputs import no_network, says  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("make, needles", [
    (lambda: Regression().loss(torch.zeros(3, 1), torch.tensor([[0.0], [math.inf], [1.0]])),
     ["1 NaN/Inf values", "clean or mask them"]),
    (lambda: Classification(3).loss(torch.zeros(2, 3), torch.tensor([[0.5, 0.5, 0.0], [math.nan, 0.0, 1.0]])),
     ["NaN/Inf", "check the label pipeline"]),
])
def test_nan_or_inf_targets(make, needles):
    with pytest.raises(ValueError) as err:
        make()
    says(err, *needles)


def test_mask_value_outside_classes_besides_ignore_index():
    mask = torch.zeros(2, 4, 4, dtype=torch.long)
    mask[0, 0, 0], mask[1, 1, 1] = 255, 5  # 255 is ignored, 5 is not a class
    with pytest.raises(ValueError) as err:
        Segmentation(3, ignore_index=255).loss(torch.randn(2, 3, 4, 4), mask)
    says(err, "to 5", "ignore_index=255 excepted", "[0, 3)", "Check num_classes=3")
    mask[1, 1, 1] = 2
    output = torch.randn(2, 3, 4, 4)
    assert torch.isfinite(Segmentation(3, ignore_index=255).loss(output, mask))
    # the ignored pixel counts in no term: the cross-entropy alone is torch's with the same ignore_index
    ce = Segmentation(3, ignore_index=255, dice_weight=0.0).loss(output, mask)
    assert torch.allclose(ce, F.cross_entropy(output, mask, ignore_index=255), rtol=1e-5)


def test_float_mask_where_class_indices_are_expected_3d():
    with pytest.raises(TypeError) as err:
        Segmentation(2).loss(torch.randn(1, 2, 2, 4, 4), torch.ones(1, 2, 4, 4))
    says(err, "torch.float32", "mask.long()", "mode='multilabel'")


def test_output_and_mask_size_mismatch_3d():
    with pytest.raises(ValueError) as err:
        Segmentation(2).loss(torch.randn(1, 2, 4, 8, 8), torch.zeros(1, 4, 6, 6, dtype=torch.long))
    says(err, "(4, 6, 6)", "(4, 8, 8)", "resize the mask (nearest)")


def test_wrong_output_channels_for_segmentation():
    with pytest.raises(ValueError) as err:
        Segmentation(3).loss(torch.randn(2, 4, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    says(err, "(2, 4, 8, 8)", "(B, 3, H, W)", "Check the network's out channels")


def test_bool_class_targets():
    with pytest.raises(TypeError) as err:
        Classification(2).loss(torch.randn(3, 2), torch.tensor([True, False, True]))
    says(err, "torch.bool", "target.long()")


def _too_long_for_partner():
    log_probs = torch.randn(3, 2, 5).log_softmax(-1)  # T = 3
    targets = (torch.tensor([[1, 0, 0, 0], [1, 2, 3, 4]]), torch.tensor([1, 4]))  # sample 1 needs 4 steps
    plan = MixPlan("input", torch.tensor([0.7, 0.4]), torch.tensor([1, 0]))  # each sample's partner is the other
    return log_probs, targets, plan


def test_ctc_target_longer_than_output_under_a_plan_names_samples_and_fix():
    log_probs, targets, plan = _too_long_for_partner()
    with pytest.raises(ValueError) as err:
        CTC().loss(log_probs, targets, plan)
    says(err, "samples [1]", "lengths [4]", "[3] steps", "CTC(zero_infinity=True)", "less downsampling")


def test_ctc_target_longer_than_output_with_zero_infinity_warns():
    log_probs, targets, plan = _too_long_for_partner()
    with pytest.warns(UserWarning, match="cannot be aligned"):
        loss = CTC(zero_infinity=True).loss(log_probs, targets, plan)
    # by hand: torch's per-sample losses (0 where no alignment exists) over each target's length, both
    # terms on T = 3 steps, mixed with each sample's lam, then the batch mean
    (padded, lengths), steps = targets, torch.tensor([3, 3])
    own = F.ctc_loss(log_probs, padded, steps, lengths, reduction="none", zero_infinity=True) / lengths
    other = F.ctc_loss(log_probs, padded[[1, 0]], steps, lengths[[1, 0]], reduction="none", zero_infinity=True)
    other = other / lengths[[1, 0]]
    assert own[1] == 0 and other[0] == 0 and own[0] > 0 and other[1] > 0  # the unalignable term counts 0
    want = (plan.lam * own + (1 - plan.lam) * other).mean()
    assert torch.allclose(loss, want, rtol=1e-5)


def test_ctc_batch_mismatch_lists_every_shape():
    with pytest.raises(ValueError) as err:
        CTC().loss(torch.randn(6, 2, 5).log_softmax(-1), (torch.ones(3, 2, dtype=torch.long), torch.tensor([2, 2, 2])))
    says(err, "(6, 2, 5)", "(3, 2)", "all need B=2")
