"""Metrics on unmixed passes: calibration (NLL, ECE, adaptive ECE, Brier, accuracy) and segmentation (Dice).

Calibrated likelihood is Manifold Mixup's headline result (Verma et al., ICML 2019), so the
calibration metrics (:mod:`.calibration`) are first-class; :mod:`.segmentation` adds Dice and
HD95 per class (MONAI) and uses the same pixel NLL and ECE; :mod:`.temperature` fits the
temperature the calibrated figures use.
"""

from mmix_applied.metrics.calibration import (
    Accuracy,
    AdaptiveCalibrationError,
    BrierScore,
    ConfidenceGap,
    ExpectedCalibrationError,
    NegativeLogLikelihood,
    adaptive_calibration_bins,
    adaptive_ece,
    brier_score,
    calibration_bins,
    calibration_curve,
    classification_metrics,
    confidence_gap,
    expected_calibration_error,
    flatten_scores,
    negative_log_likelihood,
)
from mmix_applied.metrics.segmentation import SegmentationMetrics

__all__ = [
    "Accuracy",
    "AdaptiveCalibrationError",
    "BrierScore",
    "ConfidenceGap",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
    "SegmentationMetrics",
    "adaptive_calibration_bins",
    "adaptive_ece",
    "brier_score",
    "calibration_bins",
    "calibration_curve",
    "classification_metrics",
    "confidence_gap",
    "expected_calibration_error",
    "flatten_scores",
    "negative_log_likelihood",
]
