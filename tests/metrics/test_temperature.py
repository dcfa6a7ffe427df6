"""Temperature scaling against independent computations (scipy, numpy)."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax as np_log_softmax

from mmix_applied.metrics.temperature import (
    CalibrationWarning,
    TemperatureScaler,
    fit_temperature,
    scaled_nll,
)


def _scipy_temperature(z, y, bounds=(0.05, 20.0), sigmoid=False):
    """An independent fit: scipy's bounded Brent on the NLL as a function of log T, in numpy."""
    z, y = np.asarray(z, np.float64), np.asarray(y)

    def nll(u):
        s = math.exp(-u)
        if sigmoid:
            return float(np.mean(np.logaddexp(0.0, (1.0 - 2.0 * y) * z * s)))
        return float(-np.mean(np_log_softmax(z * s, axis=1)[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-10, "maxiter": 500})
    return math.exp(res.x)


def _case(seed, n=300, c=5, scale=1.0, noise=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    z = torch.randn(n, c, generator=g) * noise + 2.0 * F.one_hot(y, c)
    return z * scale, y


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 0.3), (2, 4.0), (3, 0.1), (4, 8.0)])
def test_temperature_matches_scipy_and_never_raises_nll(seed, scale):
    # scale < 1: underconfident logits (T < 1 expected); scale > 1: overconfident (T > 1)
    z, y = _case(seed, scale=scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        t = fit_temperature(z, y)
    ref = _scipy_temperature(z.numpy(), y.numpy())
    assert abs(t - ref) / ref < 1e-3
    assert scaled_nll(z, y, t) <= scaled_nll(z, y, 1.0) + 1e-12
    # T is equivariant: logits a * z need a times the temperature of z
    base = fit_temperature(*_case(seed))
    assert t == pytest.approx(scale * base, rel=1e-4)
    # the NLL of T beats its neighbours: it is a minimum, not just better than 1
    assert scaled_nll(z, y, t) <= min(scaled_nll(z, y, t * 1.01), scaled_nll(z, y, t / 1.01))


def test_dense_logits_with_ignore_index_match_a_flattened_fit():
    g = torch.Generator().manual_seed(5)
    mask = torch.randint(0, 4, (2, 6, 7), generator=g)
    logits = (torch.randn(2, 4, 6, 7, generator=g) + 2 * F.one_hot(mask, 4).permute(0, 3, 1, 2)) * 3
    mask[0, :2] = 255
    t = fit_temperature(logits, mask, ignore_index=255)
    flat = logits.permute(0, 2, 3, 1).reshape(-1, 4)
    keep = mask.reshape(-1) != 255
    assert t == pytest.approx(fit_temperature(flat[keep], mask.reshape(-1)[keep]), rel=1e-9)
    assert t == pytest.approx(_scipy_temperature(flat[keep].numpy(), mask.reshape(-1)[keep].numpy()), rel=1e-3)


def test_binary_and_multilabel_sigmoid_against_scipy():
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 2, (3, 2, 5, 5), generator=g).float()
    z = (torch.randn(3, 2, 5, 5, generator=g) + 1.5 * (2 * y - 1)) * 3.0
    t = fit_temperature(z, y, multilabel=True)
    assert t == pytest.approx(_scipy_temperature(z.reshape(-1).numpy(), y.reshape(-1).numpy(), sigmoid=True),
                              rel=1e-3)
    assert t > 1.0 and scaled_nll(z, y, t, multilabel=True) <= scaled_nll(z, y, 1.0, multilabel=True)
    # a single logit per sample (C == 1) with 0/1 class-index targets is the same binary fit
    t1 = fit_temperature(z.reshape(-1, 1), y.reshape(-1).long())
    assert t1 == pytest.approx(t, rel=1e-9)
    # scaled NLL equals torch's BCE on logits / T: an independent formula
    bce = F.binary_cross_entropy_with_logits(z / t, y).item()
    assert scaled_nll(z, y, t, multilabel=True) == pytest.approx(bce, rel=1e-6)


@pytest.mark.parametrize("name,logits,targets,match,expect", [
    ("empty", torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "empty input", 1.0),
    ("tied", torch.ones(8, 3), torch.arange(8) % 3, "tied logits", 1.0),
    ("all_correct", 5 * F.one_hot(torch.arange(9) % 3, 3).float(), torch.arange(9) % 3, "all-correct", 0.05),
    ("single_class", torch.tensor([[2.0, 0.0], [0.5, 0.3], [-0.2, 0.1], [1.0, 0.0]]), torch.zeros(4, dtype=torch.long),
     "single class", None),
    ("all_wrong", -5 * F.one_hot(torch.arange(9) % 3, 3).float() + 0.1 * torch.arange(27.0).reshape(9, 3),
     torch.arange(9) % 3, "all-wrong", None),
    ("sigmoid_zero", torch.zeros(6, 1), torch.tensor([0, 1, 0, 1, 1, 0]), "constant logits", 1.0),
])
def test_degenerate_cases_warn_and_stay_bounded(name, logits, targets, match, expect):
    with pytest.warns(CalibrationWarning, match=match):
        t = fit_temperature(logits, targets)
    assert 0.05 <= t <= 20.0
    if expect is not None:
        assert t == pytest.approx(expect, rel=1e-3)


def test_bad_input_says_what_was_received():
    with pytest.raises(ValueError, match="received shape \\(5,\\)"):
        fit_temperature(torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="multilabel=True"):
        fit_temperature(torch.zeros(5, 2), torch.zeros(5))
    with pytest.raises(ValueError, match="target value 3 is outside \\[0, 3\\)"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="0 < lo < 1 < hi"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0, 1]), bounds=(2.0, 3.0))
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_temperature(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


def test_scaler_streams_subsamples_and_round_trips_state_dict():
    g = torch.Generator().manual_seed(7)
    scaler = TemperatureScaler(max_per_update=100, ignore_index=-1)
    batches = []
    for _ in range(3):
        z = torch.randn(2, 3, 10, 10, generator=g) * 0.4
        m = torch.where(torch.rand(2, 10, 10, generator=g) < 0.9, z.argmax(1), torch.randint(0, 3, (2, 10, 10),
                                                                                          generator=g))
        m[:, 0] = -1
        batches.append((z, m))
        scaler.update(z, m)
    assert scaler.num_positions == 300
    t = scaler.fit()
    assert float(scaler.temperature) == t and t < 1.0  # mostly argmax targets, small logits: underconfident
    # whole-data fit agrees with the subsample's to within sampling noise
    whole = fit_temperature(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), ignore_index=-1)
    assert t == pytest.approx(whole, rel=0.25)
    other = TemperatureScaler()
    other.load_state_dict(scaler.state_dict())
    assert float(other.temperature) == t
    x = torch.randn(4, 3)
    assert torch.equal(other.scale(x), x / torch.tensor(t, dtype=x.dtype))
    assert torch.equal(other.scale(x).argmax(1), x.argmax(1))  # a temperature changes no prediction


def test_scaler_without_data_warns():
    with pytest.warns(CalibrationWarning, match="no batches"):
        assert TemperatureScaler().fit() == 1.0


def test_scaler_nll_is_the_mean_nll_of_what_it_kept():
    from mmix_applied.metrics.temperature import TemperatureScaler, scaled_nll

    torch.manual_seed(0)
    z, y = torch.randn(300, 5) * 3, torch.randint(0, 5, (300,))
    scaler = TemperatureScaler()
    scaler.update(z[:100], y[:100])
    scaler.update(z[100:], y[100:])
    t = scaler.fit()
    assert scaler.nll(1.0) == pytest.approx(float(torch.nn.functional.cross_entropy(z.double(), y)), rel=1e-9)
    assert scaler.nll() == pytest.approx(scaled_nll(z, y, t), rel=1e-6) and scaler.nll() <= scaler.nll(1.0)
    with pytest.raises(ValueError, match="positive"):
        scaler.nll(0.0)
    with pytest.raises(ValueError, match="no batches"):
        TemperatureScaler().nll()
