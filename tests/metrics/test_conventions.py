"""Each metric convention against MONAI, torchmetrics or sklearn, and where ours differs on purpose, by how much.

HD95 is MONAI's ``HausdorffDistanceMetric(percentile=95)`` in 2D and 3D (NaN for a class empty in
the truth or the prediction, skipped); the Brier score is the multi-class sum (binary = 2x
sklearn's); ECE bins are ``[lo, hi)`` with confidence 1.0 in the last bin, as torchmetrics; a
binary output's ECE is judged on the top label of ``[1 - p, p]``.
"""

import warnings

import pytest
import torch
from sklearn.metrics import brier_score_loss
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from mmix_applied.metrics import SegmentationMetrics, brier_score, calibration_bins, expected_calibration_error


def _blobs(g, b, c, shape):
    """Logits whose argmax forms a few blocks per class (HD95 on random pixels would be trivial)."""
    coarse = torch.randn(b, c, *[max(1, s // 4) for s in shape], generator=g) * 3
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=False)


@pytest.mark.parametrize("shape", [(16, 16), (8, 12, 12)])
def test_hd95_per_class_matches_monai(shape):
    from monai.metrics import HausdorffDistanceMetric

    g = torch.Generator().manual_seed(len(shape))
    batches = []
    for _ in range(2):
        logits = _blobs(g, 2, 3, shape)
        truth = _blobs(g, 2, 3, shape).argmax(1)
        batches.append((logits, truth))
    batches[0][1][1][batches[0][1][1] == 2] = 1  # class 2 absent from one sample's truth
    batches[1][0][0, 1] = -50.0  # class 1 never predicted in one sample
    ours = SegmentationMetrics(num_classes=3, class_names=["bg", "a", "b"], hd95=True)
    ref = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="mean_batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logits, truth in batches:
            ours.update(logits, truth)
            onehot = lambda t: torch.nn.functional.one_hot(t, 3).movedim(-1, 1).float()  # noqa: E731
            ref(onehot(logits.argmax(1)), onehot(truth))
        expected = ref.aggregate()
    out = ours.compute()
    for i, name in enumerate(["bg", "a", "b"]):
        assert out[f"hd95_{name}"].item() == pytest.approx(expected[i].item(), rel=1e-5)
    assert out["mean_hd95"].item() == pytest.approx(expected[1:].mean().item(), rel=1e-5)  # foreground mean
    assert "hd95_a" not in SegmentationMetrics(num_classes=3, class_names=["bg", "a", "b"]).compute()


def test_calibration_only_metrics_skip_dice():
    g = torch.Generator().manual_seed(3)
    logits, truth = torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g)
    full, only = SegmentationMetrics(num_classes=3), SegmentationMetrics(num_classes=3, calibration_only=True)
    full.update(logits, truth)
    only.update(logits, truth)
    got, ref = only.compute(), full.compute()
    assert set(got) == {"nll", "ece", "conf_gap"} and all(got[k] == ref[k] for k in got)


def test_binary_brier_is_twice_sklearns():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(50, 1, generator=g), torch.randint(0, 2, (50,), generator=g)
    p = torch.sigmoid(logits[:, 0]).numpy()
    ours = brier_score(logits, y).item()
    assert ours == pytest.approx(2 * brier_score_loss(y.numpy(), p), rel=1e-5)  # both classes' squared errors
    assert 0 <= ours <= 2


def test_ece_bins_are_lo_inclusive_with_one_in_the_last_bin_like_torchmetrics():
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.0, 1.0], [0.75, 0.25]], dtype=torch.float64)
    target = torch.tensor([0, 1, 1, 1])
    count, _, _ = calibration_bins(probs, target, n_bins=4)
    # 0.5 -> [0.5, 0.75), 0.75 -> [0.75, 1.0], 1.0 -> last bin, 0.75 again -> [0.75, 1.0]
    assert count.tolist() == [0.0, 0.0, 1.0, 3.0]
    ref = MulticlassCalibrationError(num_classes=2, n_bins=4, norm="l1")
    ours = expected_calibration_error(probs.float(), target, n_bins=4, from_logits=False).item()
    assert ours == pytest.approx(ref(probs.float(), target).item(), abs=1e-6)


def test_binary_ece_is_on_the_top_label_unlike_torchmetrics_binary():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(400, 1, generator=g) * 2, torch.randint(0, 2, (400,), generator=g)
    p = torch.sigmoid(logits[:, 0])
    ours = expected_calibration_error(logits, y).item()
    top_label = MulticlassCalibrationError(num_classes=2, n_bins=15)(torch.stack([1 - p, p], 1), y).item()
    assert ours == pytest.approx(top_label, abs=1e-5)
    # torchmetrics' BinaryCalibrationError bins p itself against the positive rate. They part where
    # confident positives and confident negatives share a top-label bin: p = 0.9 (all y = 1) and
    # p = 0.1 (all y = 1, so wrong) both have top-label confidence 0.9 at accuracy 0.5 -> ECE 0.4;
    # binned by p they are two bins with gaps 0.1 and 0.9 -> ECE 0.5.
    q = torch.tensor([0.9] * 10 + [0.1] * 10)
    t = torch.ones(20, dtype=torch.long)
    assert expected_calibration_error(q[:, None], t, from_logits=False).item() == pytest.approx(0.4, abs=1e-6)
    assert BinaryCalibrationError(n_bins=15)(q, t).item() == pytest.approx(0.5, abs=1e-6)
