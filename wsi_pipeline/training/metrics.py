"""Validation metrics stored with a trained model: :func:`wsi_pipeline.evaluation.compute_metrics`
in the flat layout of the model config (``confusion_matrix`` as a dict, ``<name>_ci`` intervals)."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.evaluation.report import compute_metrics


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Accuracy, AUC, sensitivity, specificity and confusion matrix at ``threshold``,
    each scalar with a percentile-bootstrap 95 % interval (``<name>_ci``)."""
    metrics = compute_metrics(labels, probs, threshold, n_boot=n_boot, seed=seed)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    out = {key: metrics[key] for key in ("accuracy", "auc", "sensitivity", "specificity", "n", "threshold")}
    out["confusion_matrix"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    out.update({f"{name}_ci": interval for name, interval in metrics["intervals"].items()})
    return out
