"""Calibration metrics against independent formulas (numpy by hand) and torchmetrics."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from mmix_applied.metrics import (
    Accuracy,
    BrierScore,
    ExpectedCalibrationError,
    NegativeLogLikelihood,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)


def _np_softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ece_by_hand(p, y, n_bins=15):
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if inside.any():
            total += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 2
    target = torch.randint(0, 5, (64,), generator=g)
    return logits, target


def test_metrics_match_independent_formulas(scores):
    logits, target = scores
    p, y = _np_softmax(logits.double().numpy()), target.numpy()
    nll = -np.log(p[np.arange(len(y)), y]).mean()
    brier = ((p - np.eye(5)[y]) ** 2).sum(1).mean()
    ece = _ece_by_hand(p, y)
    assert negative_log_likelihood(logits, target).item() == pytest.approx(nll, rel=1e-5)
    assert brier_score(logits, target).item() == pytest.approx(brier, rel=1e-5)
    assert expected_calibration_error(logits, target).item() == pytest.approx(ece, abs=1e-6)
    reference = MulticlassCalibrationError(num_classes=5, n_bins=15, norm="l1")(torch.softmax(logits, 1), target)
    assert expected_calibration_error(logits, target).item() == pytest.approx(reference.item(), abs=1e-6)


def test_stateful_metrics_accumulate_batches_like_one_pass(scores):
    logits, target = scores
    metrics = classification_metrics()
    for chunk in range(4):
        sl = slice(16 * chunk, 16 * (chunk + 1))
        metrics.update(logits[sl], target[sl])
    out = metrics.compute()
    assert out["nll"].item() == pytest.approx(negative_log_likelihood(logits, target).item(), rel=1e-5)
    assert out["ece"].item() == pytest.approx(expected_calibration_error(logits, target).item(), abs=1e-6)
    assert out["brier"].item() == pytest.approx(brier_score(logits, target).item(), rel=1e-5)
    assert out["acc"].item() == pytest.approx((logits.argmax(1) == target).float().mean().item())


def test_probabilities_input_equals_logits_input(scores):
    logits, target = scores
    probs = torch.softmax(logits, 1)
    for cls in (NegativeLogLikelihood, BrierScore, ExpectedCalibrationError):
        a, b = cls(), cls(from_logits=False)
        a.update(logits, target)
        b.update(probs, target)
        assert a.compute().item() == pytest.approx(b.compute().item(), rel=1e-4, abs=1e-6)


def test_dense_outputs_flatten_per_pixel_and_ignore_index():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0, :] = 255
    flat_logits = logits.movedim(1, -1).reshape(-1, 3)
    flat_target = target.reshape(-1)
    keep = flat_target != 255
    m = NegativeLogLikelihood(ignore_index=255)
    m.update(logits, target)
    expected = torch.nn.functional.cross_entropy(flat_logits[keep], flat_target[keep])
    assert m.compute().item() == pytest.approx(expected.item(), rel=1e-5)
    acc = Accuracy(ignore_index=255)
    acc.update(logits, target)
    assert acc.compute().item() == pytest.approx((flat_logits[keep].argmax(1) == flat_target[keep]).float().mean().item())


def test_binary_single_channel_is_two_class_sigmoid():
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    target = torch.tensor([1, 0, 0])
    p1 = torch.sigmoid(logits[:, 0])
    expected = -(torch.log(p1[0]) + torch.log(1 - p1[1]) + torch.log(1 - p1[2])) / 3
    assert negative_log_likelihood(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_targets_raise_clear_errors(scores):
    logits, target = scores
    with pytest.raises(ValueError, match="outside"):
        negative_log_likelihood(logits, target + 5)
    with pytest.raises(ValueError, match="integer"):
        negative_log_likelihood(logits, target.float())
    with pytest.raises(ValueError, match="targets"):
        negative_log_likelihood(logits, target[:10])


def test_reliability_bins_and_diagram(tmp_path, scores):
    from mmix_applied.reports.figures import reliability_diagram

    logits, target = scores
    m = ExpectedCalibrationError(n_bins=10)
    m.update(logits, target)
    bins = m.bins()
    assert bins["count"].sum().item() == 64
    nonempty = bins["count"] > 0
    ece = (bins["count"][nonempty] * (bins["accuracy"] - bins["confidence"])[nonempty].abs()).sum() / 64
    assert ece.item() == pytest.approx(m.compute().item(), abs=1e-6)
    path = reliability_diagram(bins, tmp_path / "rel.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
