"""Metrics. ``classification``: predictions over a loader, top-k with reference sets, confusion matrix, calibration.

Kept to plain re-exports of light modules, so importing ``xai_bench.metrics`` never pulls in heavy optional
dependencies; a family that needs them is imported from its own submodule.
"""

from xai_bench.metrics.classification import (
    CalibrationBins,
    Predictions,
    calibration_bins,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    predict,
    topk_correct,
)

__all__ = [
    "CalibrationBins",
    "Predictions",
    "calibration_bins",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "predict",
    "topk_correct",
]
