"""The plan's randomness: Beta draws from the mixer's generator, boxes, reproducibility."""

import dataclasses

import pytest
import torch
from scipy import stats

from mmix_applied import MixPlan, box_mask
from mmix_applied.core.plan import sample_beta, sample_box


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_beta_sampler_matches_scipy(alpha):
    g = torch.Generator().manual_seed(0)
    draws = sample_beta(alpha, 20000, g, dtype=torch.float64).numpy()
    assert draws.min() >= 0 and draws.max() <= 1
    ks = stats.kstest(draws, stats.beta(alpha, alpha).cdf)
    assert ks.pvalue > 1e-3, ks


def test_beta_sampler_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = sample_beta(2.0, 5, torch.Generator().manual_seed(7))
    b = sample_beta(2.0, 5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(before, torch.random.get_rng_state())


def test_box_mask_centre_rule_scales_exactly_to_finer_grids():
    box = torch.tensor([[0.25, 0.75], [0.5, 1.0]])
    coarse = box_mask(box, (4, 4))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 2:4] = True
    assert torch.equal(coarse, expected)
    fine = box_mask(box, (8, 8))
    assert torch.equal(fine, coarse.repeat_interleave(2, 0).repeat_interleave(2, 1))


@pytest.mark.parametrize("grid", [(4, 4), (7, 5), (3, 4, 6)])
def test_sample_box_lam_is_exact_kept_area_on_grid(grid):
    g = torch.Generator().manual_seed(1)
    for lam in (0.1, 0.5, 0.9):
        box, kept = sample_box(lam, grid, g)
        mask = box_mask(box, grid)
        assert kept == pytest.approx(1 - mask.double().mean().item(), abs=1e-6)


def test_plan_to_and_batch_size():
    plan = MixPlan("input", torch.tensor(0.5), torch.tensor([1, 0, 2]))
    assert plan.batch_size == 3
    moved = plan.to("cpu")
    assert moved.point == "input" and moved.box is None
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'point'"):
        plan.point = "other"  # frozen
