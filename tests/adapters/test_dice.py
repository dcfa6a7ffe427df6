"""The soft-label Dice term against MONAI's DiceLoss and a by-hand computation on kept pixels only."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from mmix_applied import MixPlan
from mmix_applied.adapters import Segmentation
from mmix_applied.adapters.dice import soft_dice_loss

PERM = torch.tensor([2, 0, 3, 1])
SPATIAL = [(6, 7), (3, 4, 5)]


def _plan(lam):
    return MixPlan("input", torch.as_tensor(lam, dtype=torch.float32), PERM)


def _mask(mode, C, spatial):
    if mode == "multilabel":
        return torch.randint(0, 2, (4, C, *spatial))
    return torch.randint(0, 2 if mode == "binary" else C, (4, *spatial))


def _logits_for(probs, mode):
    """Logits whose softmax (multiclass) or sigmoid (binary, multilabel) is ``probs``."""
    p = probs.double()
    if mode == "multiclass":
        return p.clamp_min(1e-300).log().float()
    p = p.clamp(1e-9, 1 - 1e-9)
    return (p.log() - (1 - p).log()).float()


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("mode, C", [("multiclass", 3), ("binary", 1), ("multilabel", 3)])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("lam", [0.3, torch.tensor([0.2, 0.5, 0.9, 0.6])])
def test_dice_term_is_zero_at_a_prediction_equal_to_the_soft_target(spatial, mode, C, include_background, lam):
    mask = _mask(mode, C, spatial)
    seg = Segmentation(C, mode=mode, ce_weight=0.0, include_background=include_background)
    soft = seg.mix_targets(mask, _plan(lam))
    assert ((soft > 0) & (soft < 1)).any(), "the target must be soft for the test to mean anything"
    out = _logits_for(soft, mode)
    assert seg.loss(out, mask, _plan(lam)).item() == pytest.approx(0.0, abs=1e-6)
    for batch in (True, False):
        assert soft_dice_loss(soft, soft, batch=batch).item() == pytest.approx(0.0, abs=1e-6)
    # Control: the classic formula (MONAI's default, soft_label=False) is not 0 there.
    classic = DiceLoss(batch=True, include_background=include_background or C == 1)(soft, soft).item()
    assert classic > 0.05


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_dice_equals_monai_soft_label_on_soft_targets(spatial, batch, include_background, reduction):
    probs = torch.rand(3, 4, *spatial)
    target = torch.rand(3, 4, *spatial)
    for nr, dr in ((1e-5, 1e-5), (0.5, 2.0)):
        want = DiceLoss(soft_label=True, batch=batch, include_background=include_background, reduction=reduction,
                        smooth_nr=nr, smooth_dr=dr)(probs, target)
        got = soft_dice_loss(probs, target, batch=batch, include_background=include_background, reduction=reduction,
                             smooth_nr=nr, smooth_dr=dr)
        assert torch.allclose(got, want.reshape(got.shape), atol=1e-6)


@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("dice_batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_adapter_dice_equals_monai_on_soft_mixed_and_on_hard_targets(spatial, dice_batch, include_background):
    C = 3
    out, mask = torch.randn(4, C, *spatial), _mask("multiclass", C, spatial)
    seg = Segmentation(C, ce_weight=0.0, dice_batch=dice_batch, include_background=include_background,
                       smooth_nr=1e-3, smooth_dr=1e-2)
    options = dict(softmax=True, batch=dice_batch, include_background=include_background, smooth_nr=1e-3,
                   smooth_dr=1e-2)
    # hard targets: MONAI's default DiceLoss (soft_label=False) with its own one-hot
    hard = DiceLoss(to_onehot_y=True, **options)(out, mask[:, None])
    assert seg.loss(out, mask).item() == pytest.approx(hard.item(), abs=1e-6)
    # soft (mixed) targets: MONAI's soft-label DiceLoss
    soft = 0.4 * F.one_hot(mask, C).movedim(-1, 1).float() + 0.6 * F.one_hot(mask[PERM], C).movedim(-1, 1).float()
    want = DiceLoss(soft_label=True, **options)(out, soft)
    assert seg.loss(out, mask, _plan(0.4)).item() == pytest.approx(want.item(), abs=1e-6)
    # and the classic formula differs on them, so the two checks test different things
    assert abs(DiceLoss(**options)(out, soft).item() - want.item()) > 1e-3


@pytest.mark.parametrize("mode, C", [("binary", 1), ("multilabel", 2)])
def test_adapter_sigmoid_dice_equals_monai_on_hard_targets(mode, C):
    out, mask = torch.randn(4, C, 5, 6), _mask(mode, C, (5, 6))
    target = mask.float() if mode == "multilabel" else mask[:, None].float()
    want = DiceLoss(sigmoid=True, batch=True)(out, target)
    assert Segmentation(C, mode=mode, ce_weight=0.0).loss(out, mask).item() == pytest.approx(want.item(), abs=1e-6)


def test_ignore_index_pixels_are_dropped_per_sample_in_3d_binary():
    """dice_batch=False, binary, 3D: the loss is the one computed on each sample's kept voxels alone."""
    out = torch.randn(4, 1, 3, 4, 5)
    mask = torch.randint(0, 2, (4, 3, 4, 5))
    mask[0, 0] = 7
    mask[2, :, 1:3, 2:] = 7
    lam = 0.6
    seg = Segmentation(1, mode="binary", ignore_index=7, dice_batch=False)
    keep = (mask != 7) & (mask[PERM] != 7)
    clean = torch.where(mask != 7, mask, torch.zeros_like(mask)).float()
    soft = lam * clean + (1 - lam) * clean[PERM]
    logits = out[:, 0]
    bce = F.binary_cross_entropy_with_logits(logits[keep], soft[keep])
    dices = []
    for b in range(4):
        p, t = logits[b][keep[b]].sigmoid(), soft[b][keep[b]]
        dices.append(1 - (2 * torch.minimum(p, t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5))
    want = bce + torch.stack(dices).mean()
    assert seg.loss(out, mask, _plan(lam)).item() == pytest.approx(want.item(), abs=1e-5)
