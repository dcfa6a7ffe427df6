"""Adapters against independent computations: F.cross_entropy, F.ctc_loss, a hand-written soft Dice."""

import pytest
import torch
import torch.nn.functional as F

from mmix_applied import MixPlan
from mmix_applied.adapters import CTC, Classification, MultiLabel, Regression, Segmentation

PERM = torch.tensor([2, 0, 3, 1])


def _plan(lam, box=None):
    return MixPlan("input", torch.as_tensor(lam, dtype=torch.float32), PERM, box)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("lam", [0.3, torch.tensor([0.1, 0.5, 0.7, 1.0])])
def test_classification_equals_mixture_of_cross_entropies(smoothing, lam):
    out, y = torch.randn(4, 5), torch.tensor([0, 3, 4, 1])
    got = Classification(5, label_smoothing=smoothing).loss(out, y, _plan(lam))
    lam = torch.as_tensor(lam)
    ce = lambda t: F.cross_entropy(out, t, label_smoothing=smoothing, reduction="none")  # noqa: E731
    want = (lam * ce(y) + (1 - lam) * ce(y[PERM])).mean()  # CE is linear in the target
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert Classification(5, label_smoothing=smoothing).loss(out, y).item() == pytest.approx(
        F.cross_entropy(out, y, label_smoothing=smoothing).item(), abs=1e-6)


def test_classification_soft_targets_and_mix_targets():
    y = torch.tensor([0, 1, 2, 1])
    mixed = Classification(3).mix_targets(y, _plan(0.25))
    want = 0.25 * F.one_hot(y, 3) + 0.75 * F.one_hot(y[PERM], 3)
    assert torch.allclose(mixed, want.float())
    soft = torch.softmax(torch.randn(4, 3), 1)
    out = torch.randn(4, 3)
    assert Classification(3).loss(out, soft).item() == pytest.approx(F.cross_entropy(out, soft).item(), abs=1e-6)


def test_multilabel_and_regression_interpolate_targets():
    out, y = torch.randn(4, 3), torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    want_y = 0.6 * y.float() + 0.4 * y[PERM].float()
    assert MultiLabel(3).loss(out, y, _plan(0.6)).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(out, want_y).item(), abs=1e-6)
    out, t = torch.randn(4, 2), torch.randn(4, 2)
    assert Regression("l1").loss(out, t, _plan(0.6)).item() == pytest.approx(
        (out - (0.6 * t + 0.4 * t[PERM])).abs().mean().item(), abs=1e-6)


def _soft_dice_by_hand(probs, target, smooth=1e-5):
    """1 - (2 * sum(min(p, t)) + s) / (sum p + sum t + s) per class over the batch, averaged over classes.

    The fuzzy-set intersection min(p, t) is sum(p t) on 0/1 targets and the soft-label Dice on soft ones."""
    dims = [0] + list(range(2, probs.dim()))
    inter = torch.minimum(probs, target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def _onehot(mask, C):
    return F.one_hot(mask, C).movedim(-1, 1).float()


@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)])
def test_segmentation_multiclass_ce_plus_soft_dice_by_hand(spatial):
    C = 3
    out = torch.randn(4, C, *spatial)
    mask = torch.randint(0, C, (4, *spatial))
    lam = 0.35
    seg = Segmentation(C)
    soft = lam * _onehot(mask, C) + (1 - lam) * _onehot(mask[PERM], C)
    ce = -(soft * out.log_softmax(1)).sum(1).mean()
    want = ce + _soft_dice_by_hand(out.softmax(1), soft)
    assert seg.loss(out, mask, _plan(lam)).item() == pytest.approx(want.item(), abs=1e-5)
    # lam = 1 is the unmixed loss; the (B, 1, *S) mask layout is accepted.
    assert seg.loss(out, mask, _plan(1.0)).item() == pytest.approx(seg.loss(out, mask[:, None]).item(), abs=1e-6)


def _loss_on_kept_pixels(out, mask, keep, target):
    """CE + soft Dice computed only on the pixels ``keep`` selects, by dropping the others outright."""
    C = out.shape[1]
    logits = out.movedim(1, -1)[keep]  # (N, C): the kept pixels of the whole batch
    t = target.movedim(1, -1)[keep]
    ce = -(t * logits.log_softmax(-1)).sum(-1).mean()
    p = logits.softmax(-1)
    inter = torch.minimum(p, t).sum(0)
    dice = (1 - (2 * inter + 1e-5) / (p.sum(0) + t.sum(0) + 1e-5)).mean()
    assert p.shape[1] == C
    return ce + dice


def test_segmentation_ignore_index_pixels_count_in_neither_term():
    out = torch.randn(4, 3, 5, 5)
    mask = torch.randint(0, 3, (4, 5, 5))
    mask[:, 0, :] = 255
    mask[1, 2:4, 1:3] = 255  # a second, sample-specific ignored region
    seg = Segmentation(3, ignore_index=255)
    keep = mask != 255
    clean = torch.where(keep, mask, torch.zeros_like(mask))
    want = _loss_on_kept_pixels(out, mask, keep, _onehot(clean, 3))
    assert seg.loss(out, mask).item() == pytest.approx(want.item(), abs=1e-5)
    # mixup: a pixel counts only where both partners are labelled; its target is the mix of both
    lam = 0.3
    both = keep & keep[PERM]
    soft = lam * _onehot(clean, 3) + (1 - lam) * _onehot(clean[PERM], 3)
    want = _loss_on_kept_pixels(out, mask, both, soft)
    assert seg.loss(out, mask, _plan(lam)).item() == pytest.approx(want.item(), abs=1e-5)
    # control: counting the ignored pixels as class 0 gives another value
    assert abs(Segmentation(3).loss(out, clean, _plan(lam)).item() - want.item()) > 1e-3


def test_segmentation_cutmix_swaps_the_box_in_the_mask():
    mask = torch.randint(0, 3, (4, 8, 8))
    box = torch.tensor([[0.25, 0.75], [0.5, 1.0]])
    mixed = Segmentation(3).mix_targets(mask, _plan(0.75, box))
    want = F.one_hot(mask, 3).movedim(-1, 1).float()
    want[:, :, 2:6, 4:8] = F.one_hot(mask[PERM], 3).movedim(-1, 1).float()[:, :, 2:6, 4:8]
    assert torch.equal(mixed, want)


def test_segmentation_binary_uses_bce_and_sigmoid_dice():
    out = torch.randn(4, 1, 6, 6)
    mask = torch.randint(0, 2, (4, 6, 6))
    t = 0.4 * mask.float() + 0.6 * mask[PERM].float()
    want = F.binary_cross_entropy_with_logits(out, t[:, None]) + _soft_dice_by_hand(out.sigmoid(), t[:, None])
    got = Segmentation(1, mode="binary").loss(out, mask, _plan(0.4))
    assert got.item() == pytest.approx(want.item(), abs=1e-5)


def test_ctc_mixes_losses_per_sample_for_variable_length_targets():
    T, B, C = 12, 4, 6
    log_probs = torch.randn(T, B, C).log_softmax(-1)
    targets = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0], [5, 5, 1, 2], [2, 3, 0, 0]])
    lengths = torch.tensor([3, 1, 4, 2])
    lam = torch.tensor([0.2, 0.9, 0.5, 0.6])
    got = CTC().loss(log_probs, (targets, lengths), _plan(lam))
    per = []
    for i in range(B):
        j = int(PERM[i])
        own = F.ctc_loss(log_probs[:, i:i + 1], targets[i:i + 1, : lengths[i]], [T], [int(lengths[i])], reduction="sum")
        other = F.ctc_loss(log_probs[:, i:i + 1], targets[j:j + 1, : lengths[j]], [T], [int(lengths[j])], reduction="sum")
        per.append(lam[i] * own / lengths[i] + (1 - lam[i]) * other / lengths[j])
    assert got.item() == pytest.approx(torch.stack(per).mean().item(), abs=1e-5)
    unmixed = CTC().loss(log_probs, (targets, lengths))
    assert unmixed.item() == pytest.approx(F.ctc_loss(log_probs, targets, torch.full((B,), T), lengths).item(), abs=1e-5)


def test_ctc_target_longer_than_output_is_a_clear_error_or_zero_with_warning():
    log_probs = torch.randn(2, 2, 4).log_softmax(-1)
    target = (torch.tensor([[1, 2, 3], [1, 0, 0]]), torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="cannot be aligned"):
        CTC().loss(log_probs, target)
    with pytest.warns(UserWarning, match="cannot be aligned"):
        got = CTC(zero_infinity=True).loss(log_probs, target)
    # sample 0 (3 labels in 2 steps) counts as 0; sample 1 is its own CTC loss over its length 1
    one = F.ctc_loss(log_probs[:, 1:2], target[0][1:2, :1], [2], [1], reduction="sum")
    assert got.item() == pytest.approx((0.0 + one.item()) / 2, abs=1e-5)


@pytest.mark.parametrize("call, error, match", [
    (lambda: Classification(3).loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3])), ValueError, r"\[0, 3\)"),
    (lambda: Classification(3).loss(torch.randn(4, 3), torch.rand(4)), TypeError, "integer"),
    (lambda: Classification(3).loss(torch.randn(4, 3), torch.tensor([0, 1])), ValueError, "batch size"),
    (lambda: Classification(3).loss(torch.randn(4, 2), torch.tensor([0, 1, 1, 0])), ValueError, r"\(B, 3\)"),
    (lambda: MultiLabel(2).loss(torch.randn(4, 2), torch.full((4, 2), 2.0)), ValueError, r"\[0, 1\]"),
    (lambda: Regression().loss(torch.randn(4, 1), torch.randn(4)), ValueError, "view"),
    (lambda: Segmentation(3).loss(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)).float()), TypeError, "long"),
    (lambda: Segmentation(3).loss(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 7)), ValueError, "7"),
    (lambda: Segmentation(3).loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 5, dtype=torch.long)), ValueError, "spatial"),
    (lambda: Segmentation(2, mode="binary"), ValueError, "num_classes=1"),
    (lambda: CTC().loss(torch.randn(5, 2, 3), (torch.ones(2, 2), torch.tensor([2, 2]))), TypeError, "integer"),
])
def test_bad_targets_name_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_segmentation_3d_mask_with_a_2d_box_swaps_through_every_slice():
    mask = torch.randint(0, 3, (4, 2, 8, 8))
    box = torch.tensor([[0.25, 0.75], [0.5, 1.0]])
    mixed = Segmentation(3).mix_targets(mask, _plan(0.75, box))
    want = F.one_hot(mask, 3).movedim(-1, 1).float()
    want[:, :, :, 2:6, 4:8] = F.one_hot(mask[PERM], 3).movedim(-1, 1).float()[:, :, :, 2:6, 4:8]
    assert torch.equal(mixed, want)
    out = torch.randn(4, 3, 2, 8, 8)
    loss = Segmentation(3).loss(out, mask, _plan(0.75, box))
    want = -(want * out.log_softmax(1)).sum(1).mean() + _soft_dice_by_hand(out.softmax(1), want)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)


def test_dense_regression_cutmix_swaps_the_box():
    t = torch.randn(4, 1, 8, 8)
    box = torch.tensor([[0.0, 0.5], [0.0, 0.5]])
    mixed = Regression().mix_targets(t, _plan(0.75, box))
    want = t.clone()
    want[:, :, :4, :4] = t[PERM][:, :, :4, :4]
    assert torch.equal(mixed, want)
