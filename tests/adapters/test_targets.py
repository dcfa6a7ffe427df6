"""mix_targets on every adapter against hand computations; MONAI mask layouts and MetaTensors; CTC label checks."""

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from mmix_applied import ManifoldMixup, MixPlan
from mmix_applied.adapters import CTC, Classification, MultiLabel, Regression, Segmentation

PERM = torch.tensor([2, 0, 3, 1])


def _plan(lam, box=None):
    return MixPlan("input", torch.as_tensor(lam, dtype=torch.float32), PERM, box)


def _mixer_plan(batch=4, **options):
    return ManifoldMixup(nn.Conv2d(1, 1, 1), points=["input"], seed=3, **options).sample(batch)


# --------------------------------------------------------------------------- mix_targets
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_classification_mix_targets_pairs_with_timm_soft_target_cross_entropy(smoothing):
    C, out, y = 5, torch.randn(4, 5), torch.tensor([0, 3, 4, 1])
    adapter = Classification(C, label_smoothing=smoothing)
    for plan in (_mixer_plan(), _mixer_plan(lam_per_sample=True), None):
        mixed = adapter.mix_targets(y, plan)
        onehot = F.one_hot(y, C).float() * (1 - smoothing) + smoothing / C
        if plan is None:
            want = onehot
        else:
            lam = plan.lam.reshape(-1, 1)
            want = lam * onehot + (1 - lam) * onehot[plan.perm]
        assert torch.allclose(mixed, want, atol=1e-6)
        assert SoftTargetCrossEntropy()(out, mixed).item() == pytest.approx(adapter.loss(out, y, plan).item(), abs=1e-6)
    # soft (already probability) targets mix the same way; smoothing applies to them too
    soft = torch.softmax(torch.randn(4, C), 1)
    plan = _mixer_plan()
    s = soft * (1 - smoothing) + smoothing / C
    assert torch.allclose(adapter.mix_targets(soft, plan), plan.lam * s + (1 - plan.lam) * s[plan.perm], atol=1e-6)


def test_multilabel_and_regression_mix_targets_by_hand():
    plan = _mixer_plan()
    y = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    want = plan.lam * y.float() + (1 - plan.lam) * y[plan.perm].float()
    assert torch.allclose(MultiLabel(3).mix_targets(y, plan), want)
    assert torch.equal(MultiLabel(3).mix_targets(y, None), y.float())
    out = torch.randn(4, 3)
    assert MultiLabel(3).loss(out, y, plan).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(out, MultiLabel(3).mix_targets(y, plan)).item(), abs=1e-6)
    t = torch.randn(4, 2)
    assert torch.allclose(Regression().mix_targets(t, plan), plan.lam * t + (1 - plan.lam) * t[plan.perm])
    assert torch.equal(Regression().mix_targets(t, None), t)


def test_segmentation_mix_targets_by_hand_and_unmixed():
    mask = torch.randint(0, 3, (4, 5, 6))
    oh = F.one_hot(mask, 3).movedim(-1, 1).float()
    plan = _mixer_plan()
    want = plan.lam * oh + (1 - plan.lam) * oh[plan.perm]
    assert torch.allclose(Segmentation(3).mix_targets(mask, plan), want)
    assert torch.equal(Segmentation(3).mix_targets(mask, None), oh)


def test_ctc_mix_targets_says_to_use_loss_mixing():
    with pytest.raises(TypeError) as err:
        CTC().mix_targets((torch.ones(4, 2, dtype=torch.long), torch.tensor([2, 2, 2, 2])), _plan(0.5))
    message = str(err.value)
    assert "cannot be interpolated" in message and "adapter.loss(output, target, plan)" in message


# --------------------------------------------------------------------------- MONAI shapes
@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)])
@pytest.mark.parametrize("meta", [False, True])
def test_channel_first_masks_and_meta_tensors_need_no_extra_argument(spatial, meta):
    C = 3
    mask = torch.randint(0, C, (4, *spatial))
    wrap = (lambda t: MetaTensor(t)) if meta else (lambda t: t)
    seg, plan = Segmentation(C), _plan(0.3)
    want = seg.mix_targets(mask, plan)
    assert want.shape == (4, C, *spatial)
    got = seg.mix_targets(wrap(mask[:, None]), plan)  # MONAI's (B, 1, *S)
    assert type(got) is torch.Tensor and torch.equal(got, want)
    out = torch.randn(4, C, *spatial, requires_grad=True)
    loss = seg.loss(wrap(out), wrap(mask[:, None]), plan)
    assert type(loss) is torch.Tensor
    assert loss.item() == pytest.approx(seg.loss(out, mask, plan).item(), abs=1e-6)
    loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    # binary (B, 1, *S) and multilabel (B, C, *S) likewise
    binary = torch.randint(0, 2, (4, 1, *spatial))
    b = Segmentation(1, mode="binary").mix_targets(wrap(binary), plan)
    assert torch.allclose(b, 0.3 * binary.float() + 0.7 * binary[PERM].float())
    multi = torch.randint(0, 2, (4, 2, *spatial))
    m = Segmentation(2, mode="multilabel").mix_targets(wrap(multi), plan)
    assert torch.allclose(m, 0.3 * multi.float() + 0.7 * multi[PERM].float())


def test_depth_one_volume_and_unreadable_layouts():
    seg = Segmentation(3)
    mask = torch.randint(0, 3, (4, 1, 6, 7))
    assert seg.mix_targets(mask, _plan(0.5)).shape == (4, 3, 6, 7)  # read as 2D channel-first
    assert seg.mix_targets(mask, _plan(0.5), spatial=3).shape == (4, 3, 1, 6, 7)
    with pytest.raises(ValueError) as err:
        seg.mix_targets(torch.randint(0, 3, (4, 3, 2, 6, 7)), _plan(0.5))  # a one-hot 3D mask
    message = str(err.value)
    assert "(4, 3, 2, 6, 7)" in message and "(B, 1, D, H, W)" in message and "argmax(1)" in message
    with pytest.raises(ValueError, match="spatial must be 2 or 3; received 4"):
        seg.mix_targets(mask, _plan(0.5), spatial=4)
    with pytest.raises(ValueError, match="argmax"):  # a one-hot 2D mask against a 2D output
        seg.loss(torch.randn(4, 3, 6, 7), F.one_hot(torch.randint(0, 3, (4, 6, 7)), 3).movedim(-1, 1))


# --------------------------------------------------------------------------- CTC label checks
def _ctc_batch(targets, lengths, C=6):
    return torch.randn(12, len(lengths), C).log_softmax(-1), (torch.tensor(targets), torch.tensor(lengths))


def test_ctc_blank_inside_a_target_names_sample_position_and_range():
    log_probs, target = _ctc_batch([[1, 2, 3, 0], [4, 0, 0, 0], [5, 0, 1, 2]], [3, 1, 4])
    with pytest.raises(ValueError) as err:
        CTC().loss(log_probs, target)
    message = str(err.value)
    assert "sample 2" in message and "blank 0 at position 1" in message and "[0, 6) except the blank 0" in message
    # padding after a target's length may be the blank: the first two samples alone are fine, and the
    # padding is not read (torch's loss with other padding is the same)
    want = F.ctc_loss(log_probs[:, :2], torch.tensor([[1, 2, 3, 1], [4, 1, 1, 1]]), torch.tensor([12, 12]),
                      torch.tensor([3, 1]), blank=0, reduction="mean")
    assert torch.allclose(CTC().loss(log_probs[:, :2], (target[0][:2], target[1][:2])), want, rtol=1e-5)


@pytest.mark.parametrize("bad", [6, 9, -1])
def test_ctc_label_outside_the_classes_names_sample_and_value(bad):
    log_probs, target = _ctc_batch([[1, 2, 0], [4, bad, 1]], [2, 3])
    with pytest.raises(ValueError) as err:
        CTC().loss(log_probs, target)
    message = str(err.value)
    assert f"sample 1 holds label {bad} at position 1" in message and "[0, 6)" in message
    assert "number of classes" in message
    # a label past the target's length is padding and is neither checked nor read
    log_probs, target = _ctc_batch([[1, 2, bad], [4, 1, 1]], [2, 3])
    want = F.ctc_loss(log_probs, torch.tensor([[1, 2, 1], [4, 1, 1]]), torch.tensor([12, 12]), torch.tensor([2, 3]),
                      blank=0, reduction="mean")
    assert torch.allclose(CTC().loss(log_probs, target), want, rtol=1e-5)


def test_ctc_blank_other_than_zero_and_length_over_width():
    log_probs, target = _ctc_batch([[0, 1], [5, 2]], [2, 2])
    with pytest.raises(ValueError, match="sample 1 holds the blank 5 at position 0"):
        CTC(blank=5).loss(log_probs, target)
    log_probs, target = _ctc_batch([[1, 2], [3, 4]], [2, 3])
    with pytest.raises(ValueError, match=r"length of sample 1 is 3; lengths must be in \[0, 2\]"):
        CTC().loss(log_probs, target)
