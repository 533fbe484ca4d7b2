"""Evaluate patch classifiers: predictions (with TTA), metrics with bootstrap intervals, plots."""

from wsi_pipeline.evaluation.metrics import (
    accuracy,
    bootstrap_intervals,
    classification_report,
    confusion_matrix,
    roc_auc,
)
from wsi_pipeline.evaluation.predict import predict_dataset, predict_patches
from wsi_pipeline.evaluation.report import (
    EvaluationResult,
    binary_metrics,
    compute_metrics,
    evaluate_model,
    format_report,
)

__all__ = [
    "EvaluationResult",
    "accuracy",
    "binary_metrics",
    "bootstrap_intervals",
    "classification_report",
    "compute_metrics",
    "confusion_matrix",
    "evaluate_model",
    "format_report",
    "predict_dataset",
    "predict_patches",
    "roc_auc",
]
