"""Validation metrics stored with a trained model, built from :mod:`wsi_pipeline.evaluation.metrics`."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.evaluation.metrics import bootstrap_intervals, confusion_matrix, roc_auc


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Accuracy, AUC, sensitivity, specificity and confusion matrix at ``threshold``,
    each scalar with a percentile-bootstrap 95 % interval (``<name>_ci``)."""
    (tn, fp), (fn, tp) = confusion_matrix(labels, probs, threshold).tolist()
    n = tn + fp + fn + tp
    out: dict = {
        "accuracy": (tn + tp) / n,
        "auc": roc_auc(labels, probs),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "n": n,
        "threshold": float(threshold),
    }
    if n_boot > 0 and n > 1:
        for name, interval in bootstrap_intervals(labels, probs, threshold, n_boot, seed).items():
            out[f"{name}_ci"] = interval
    return out
