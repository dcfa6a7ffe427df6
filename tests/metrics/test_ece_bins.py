"""ECE binning (equal-width and equal-mass) against numpy and torchmetrics; one implementation; inputs checked."""

import importlib
import warnings

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

import mmix_applied.metrics.calibration as calibration
from mmix_applied.metrics import (
    AdaptiveCalibrationError,
    ConfidenceGap,
    ExpectedCalibrationError,
    adaptive_ece,
    brier_score,
    calibration_curve,
    confidence_gap,
    expected_calibration_error,
    negative_log_likelihood,
)


def _numpy_ece(conf, correct, n_bins):
    """The textbook ECE with numpy.histogram's bins: [lo, hi) and the last one closed, [lo, 1]."""
    edges = np.linspace(0, 1, n_bins + 1)
    count, _ = np.histogram(conf, bins=edges)
    conf_sum, _ = np.histogram(conf, bins=edges, weights=conf)
    acc_sum, _ = np.histogram(conf, bins=edges, weights=correct)
    ok = count > 0
    return float((np.abs(acc_sum[ok] / count[ok] - conf_sum[ok] / count[ok]) * count[ok]).sum() / count.sum())


def _hand_adaptive_ece(conf, correct, n_bins):
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for idx in np.array_split(order, n_bins):
        if len(idx):
            total += len(idx) / len(conf) * abs(correct[idx].mean() - conf[idx].mean())
    return total


def test_a_wrong_prediction_at_confidence_one_stays_in_the_last_bin():
    # two right at 0.95 and one wrong at exactly 1.0: all three are in the last bin [14/15, 1]
    probs = torch.tensor([[0.0, 1.0], [0.05, 0.95], [0.05, 0.95]])
    y = torch.tensor([0, 1, 1])
    conf, correct = probs.max(1).values.double().numpy(), (probs.argmax(1) == y).double().numpy()
    ours = expected_calibration_error(probs, y, from_logits=False).item()
    assert ours == pytest.approx(_numpy_ece(conf, correct, 15), abs=1e-6)
    assert ours == pytest.approx(abs(2 / 3 - (1.0 + 0.95 + 0.95) / 3), abs=1e-6)  # 0.3
    # torchmetrics 1.9 counts the 1.0 in a 16th bin of its own (issue #3510): 1/3 * 1 + 2/3 * 0.05
    theirs = multiclass_calibration_error(probs, y, num_classes=2, n_bins=15, norm="l1").item()
    assert theirs == pytest.approx(1 / 3 + 2 / 3 * 0.05, abs=1e-6)
    metric = ExpectedCalibrationError(from_logits=False)
    metric.update(probs, y)
    assert metric.bins()["count"].tolist()[-1] == 3 and metric.compute().item() == pytest.approx(ours)


def test_equal_width_ece_equals_numpy_and_torchmetrics_without_a_confidence_of_one():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(500, 6, generator=g) * 2, torch.randint(0, 6, (500,), generator=g)
    probs = torch.softmax(logits.double(), 1)
    assert float(probs.max()) < 1.0
    conf, correct = probs.max(1).values.numpy(), (probs.argmax(1) == y).double().numpy()
    ours = expected_calibration_error(logits.double(), y).item()
    assert ours == pytest.approx(_numpy_ece(conf, correct, 15), abs=1e-6)
    assert ours == pytest.approx(multiclass_calibration_error(probs, y, num_classes=6, n_bins=15).item(), abs=1e-6)


def test_adaptive_ece_takes_logits_by_default_like_every_other_metric():
    g = torch.Generator().manual_seed(8)
    logits, y = torch.randn(103, 4, generator=g) * 4, torch.randint(0, 4, (103,), generator=g)
    probs = torch.softmax(logits, 1)
    conf, pred = probs.max(1)
    ref = _hand_adaptive_ece(conf.double().numpy(), (pred == y).double().numpy(), 15)
    assert adaptive_ece(logits, y).item() == pytest.approx(ref, abs=1e-6)  # was > 1 when read as probabilities
    assert adaptive_ece(probs, y, from_logits=False).item() == pytest.approx(ref, abs=1e-6)
    metric = AdaptiveCalibrationError()
    metric.update(logits, y)
    assert metric.compute().item() == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("fn", [adaptive_ece, expected_calibration_error, negative_log_likelihood, brier_score,
                                confidence_gap])
def test_probabilities_outside_zero_one_are_refused(fn):
    logits, y = torch.tensor([[2.0, -1.0], [0.5, 0.1]]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"from_logits=False takes probabilities in \[0, 1\]; received scores in "
                                         r"\[-1, 2\]\. Pass logits with from_logits=True"):
        fn(logits, y, from_logits=False)
    with pytest.raises(ValueError, match="received scores in"):
        fn(torch.tensor([[float("nan"), 0.5]]), torch.tensor([0]), from_logits=False)
    fn(torch.tensor([[1.0000001, 0.0]]), torch.tensor([0]), from_logits=False)  # softmax rounding is accepted


def test_adaptive_ece_against_a_hand_computation():
    g = torch.Generator().manual_seed(8)
    probs = torch.softmax(torch.randn(103, 4, generator=g) * 2, 1)
    y = torch.randint(0, 4, (103,), generator=g)
    conf, pred = probs.max(1)
    ref = _hand_adaptive_ece(conf.double().numpy(), (pred == y).double().numpy(), 10)
    assert adaptive_ece(probs, y, n_bins=10, from_logits=False).item() == pytest.approx(ref, abs=1e-6)
    metric = AdaptiveCalibrationError(n_bins=10, from_logits=False)
    metric.update(probs[:50], y[:50])
    metric.update(probs[50:], y[50:])
    assert metric.compute().item() == pytest.approx(ref, abs=1e-6)


def test_adaptive_ece_equals_torchmetrics_where_the_bins_coincide():
    # 10 predictions in each of 5 equal-width bins: equal-mass and equal-width bins are the same sets
    rng = np.random.default_rng(0)
    n_bins, per = 5, 10
    conf = np.concatenate([rng.uniform(0.51 + 0.1 * b, 0.59 + 0.1 * b, per) for b in range(n_bins)])
    probs = torch.tensor(np.stack([conf, 1 - conf], 1), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 2, len(conf)))
    ours = adaptive_ece(probs, y, n_bins=n_bins, from_logits=False).item()
    ref = _hand_adaptive_ece(conf, (y.numpy() == 0).astype(float), n_bins)
    assert ours == pytest.approx(ref, abs=1e-6)
    widths = multiclass_calibration_error(probs, y, num_classes=2, n_bins=10, norm="l1").item()
    assert ours == pytest.approx(widths, abs=1e-6)  # bins 0.5-0.6, ..., 0.9-1.0 hold 10 each
    # and they differ once the mass is uneven: everything in one equal-width bin
    skew = torch.tensor([[0.91 + 0.008 * i, 0.09 - 0.008 * i] for i in range(10)])
    ys = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0, 1, 1])
    assert adaptive_ece(skew, ys, n_bins=5, from_logits=False).item() != pytest.approx(
        multiclass_calibration_error(skew, ys, num_classes=2, n_bins=5, norm="l1").item(), abs=1e-4)


def test_one_ece_from_bins_for_both_binnings():
    temperature = importlib.import_module("mmix_applied.metrics.temperature")
    for name in ("adaptive_ece", "adaptive_calibration_bins", "AdaptiveCalibrationError", "_ece"):
        assert not hasattr(temperature, name), name  # temperature scaling only
    sources = [n for n, v in vars(calibration).items() if callable(v) and n.startswith("_ece")]
    assert sources == ["_ece_from_bins"]
    with warnings.catch_warnings():  # the pre-#21 path still finds them (it warns once, naming the new home)
        warnings.simplefilter("ignore")
        old = importlib.import_module("mmix_applied.calibration")
        assert old.adaptive_ece is adaptive_ece and old.AdaptiveCalibrationError is AdaptiveCalibrationError


def test_confidence_gap_is_the_signed_mean_and_the_signed_binned_sum():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(400, 3, generator=g) * 3
    y = torch.multinomial(torch.softmax(logits, 1), 1, generator=g)[:, 0]  # calibrated at T = 1
    p = torch.softmax(logits.double(), 1).numpy()
    gap = p.max(1).mean() - (p.argmax(1) == y.numpy()).mean()
    assert confidence_gap(logits, y).item() == pytest.approx(gap, abs=1e-6)
    bins = calibration_curve(logits, y)
    ok = bins["count"] > 0
    signed = (bins["count"][ok] * (bins["confidence"][ok] - bins["accuracy"][ok])).sum() / bins["count"].sum()
    assert signed.item() == pytest.approx(gap, abs=1e-6)
    metric = ConfidenceGap()
    metric.update(logits[:100], y[:100])
    metric.update(logits[100:], y[100:])
    assert metric.compute().item() == pytest.approx(gap, abs=1e-6)
    assert confidence_gap(logits / 10, y).item() < 0 < confidence_gap(logits * 10, y).item()  # under, over


def test_calibration_curve_equal_mass_bins_hold_equal_counts():
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(40, 3, generator=g), torch.randint(0, 3, (40,), generator=g)
    curve = calibration_curve(logits, y, n_bins=6, equal_mass=True)
    assert curve["count"].tolist() == [7, 7, 7, 7, 6, 6]  # numpy.array_split's sizes
    conf = torch.softmax(logits.double(), 1).max(1).values.sort().values
    assert curve["confidence"][0].item() == pytest.approx(conf[:7].mean().item())
    assert curve["edges"][0].item() == pytest.approx(conf[0].item())
    assert curve["edges"][-1].item() == pytest.approx(conf[-1].item())
    assert torch.all(curve["edges"][1:] >= curve["edges"][:-1])
