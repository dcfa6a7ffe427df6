"""Metrics on unmixed passes: calibration (NLL, ECE, Brier, accuracy) and segmentation (Dice).

Calibrated likelihood is Manifold Mixup's headline result (Verma et al., ICML 2019), so the
calibration metrics (:mod:`.calibration`) are first-class; :mod:`.segmentation` adds Dice per
class (MONAI) and uses the same pixel NLL and ECE.
"""

from mmix_applied.metrics.calibration import (
    Accuracy,
    BrierScore,
    ExpectedCalibrationError,
    NegativeLogLikelihood,
    brier_score,
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    flatten_scores,
    negative_log_likelihood,
)
from mmix_applied.metrics.segmentation import SegmentationMetrics

__all__ = [
    "Accuracy",
    "BrierScore",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
    "SegmentationMetrics",
    "brier_score",
    "calibration_bins",
    "classification_metrics",
    "expected_calibration_error",
    "flatten_scores",
    "negative_log_likelihood",
]
