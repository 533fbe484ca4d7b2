"""Validation metrics for binary patch classifiers, with bootstrap 95 % intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_or_nan(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Accuracy, AUC, sensitivity, specificity and confusion matrix at ``threshold``,
    each scalar with a percentile-bootstrap 95 % interval (``<name>_ci``)."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    pred = (probs >= threshold).astype(np.int64)

    def scalars(y: np.ndarray, p: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
        pos, neg = y == 1, y == 0
        return {
            "accuracy": float((yhat == y).mean()) if len(y) else float("nan"),
            "auc": auc_or_nan(y, p),
            "sensitivity": float(yhat[pos].mean()) if pos.any() else float("nan"),
            "specificity": float(1 - yhat[neg].mean()) if neg.any() else float("nan"),
        }

    out: dict = scalars(labels, probs, pred)
    tn = int(((pred == 0) & (labels == 0)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    tp = int(((pred == 1) & (labels == 1)).sum())
    out["confusion_matrix"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    out["n"] = int(len(labels))
    out["threshold"] = float(threshold)
    if n_boot > 0 and len(labels) > 1:
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {k: [] for k in ("accuracy", "auc", "sensitivity", "specificity")}
        for _ in range(n_boot):
            idx = rng.integers(0, len(labels), len(labels))
            for k, v in scalars(labels[idx], probs[idx], pred[idx]).items():
                draws[k].append(v)
        for k, values in draws.items():
            arr = np.asarray(values)
            arr = arr[~np.isnan(arr)]
            out[f"{k}_ci"] = (
                [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))] if len(arr) else None
            )
    return out
