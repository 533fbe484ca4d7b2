"""Evaluate patch classifiers: predictions (with TTA), metrics with bootstrap intervals, plots."""

from wsi_pipeline.evaluation.metrics import (
    accuracy,
    bootstrap_intervals,
    classification_report,
    confusion_matrix,
    roc_auc,
)
from wsi_pipeline.evaluation.predict import (
    dihedral_transforms,
    predict_dataset,
    predict_patches,
    resolve_device,
)
from wsi_pipeline.evaluation.report import EvaluationResult, compute_metrics, evaluate_model, format_report

__all__ = [
    "EvaluationResult",
    "accuracy",
    "bootstrap_intervals",
    "classification_report",
    "compute_metrics",
    "confusion_matrix",
    "dihedral_transforms",
    "evaluate_model",
    "format_report",
    "predict_dataset",
    "predict_patches",
    "resolve_device",
    "roc_auc",
]
