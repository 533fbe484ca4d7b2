"""Binary-classification metrics at a threshold, and seeded vectorised bootstrap intervals.

Class 0 is "normal", class 1 "tumour". The confusion matrix is ``[[tn, fp], [fn, tp]]`` (rows: true
class, columns: predicted class), as in ``sklearn.metrics.confusion_matrix``.
"""

from __future__ import annotations

import numpy as np

from wsi_pipeline.errors import DatasetError
from wsi_pipeline.models.finite import check_finite_outputs

CLASS_NAMES = ("normal", "tumor")


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) == 0:
        raise DatasetError("cannot compute metrics on 0 patches")
    if not np.isin(y, (0, 1)).all():
        raise DatasetError("labels must be 0 or 1")
    check_finite_outputs(p, "predictions", "patches")  # NaN >= threshold is False: a silent "normal"
    return y, p


def confusion_matrix(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]`` with prediction ``prob >= threshold``."""
    y, p = _check(labels, probs)
    pred = (p >= threshold).astype(np.int64)
    return np.bincount(2 * y + pred, minlength=4).reshape(2, 2)


def accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    cm = confusion_matrix(labels, probs, threshold)
    return float(np.trace(cm) / cm.sum())


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is present."""
    y, p = _check(labels, probs)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(p)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def classification_report(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, class_names: tuple[str, ...] = CLASS_NAMES
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class, plus ``macro avg`` and ``weighted avg``.

    Undefined ratios (no predictions or no members of a class) are 0, as sklearn's ``zero_division=0``.
    """
    cm = confusion_matrix(labels, probs, threshold)
    report: dict[str, dict[str, float]] = {}
    for k, name in enumerate(class_names):
        tp = cm[k, k]
        precision = _safe_div(tp, cm[:, k].sum())
        recall = _safe_div(tp, cm[k, :].sum())
        f1 = _safe_div(2 * precision * recall, precision + recall)
        report[name] = {"precision": precision, "recall": recall, "f1-score": f1, "support": int(cm[k].sum())}
    supports = np.array([report[n]["support"] for n in class_names], dtype=np.float64)
    for avg, weights in (("macro avg", np.ones(len(class_names))), ("weighted avg", supports)):
        entry: dict[str, float] = {}
        for metric in ("precision", "recall", "f1-score"):
            values = np.array([report[n][metric] for n in class_names])
            entry[metric] = float((values * weights).sum() / weights.sum()) if weights.sum() else 0.0
        entry["support"] = int(supports.sum())
        report[avg] = entry
    return report


def roc_curve_points(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds) from sklearn."""
    from sklearn.metrics import roc_curve

    y, p = _check(labels, probs)
    fpr, tpr, thresholds = roc_curve(y, p)
    return fpr, tpr, thresholds


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n)`` int32: how often each item appears in each bootstrap resample."""
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = (draws + (np.arange(n_boot)[:, None] * n)).ravel()
    return np.bincount(flat, minlength=n_boot * n).astype(np.int32).reshape(n_boot, n)


def _weighted_auc(counts: np.ndarray, y_sorted: np.ndarray, group_starts: np.ndarray) -> np.ndarray:
    """AUC per row of resample ``counts`` (columns ordered by score, ties grouped by ``group_starts``)."""
    pos = (counts * y_sorted).astype(np.float64)
    neg = counts - pos
    if len(group_starts) < counts.shape[1]:  # tied scores: one group per distinct score
        pos = np.add.reduceat(pos, group_starts, axis=1)
        neg = np.add.reduceat(neg, group_starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives scoring strictly lower
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    max_elements: int = 4_000_000,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals for accuracy, AUC, sensitivity and specificity.

    All resamples are drawn as count vectors and evaluated with array operations, ``max_elements``
    counts at a time (bounded memory for 220k-patch sets). Same seed, same intervals.
    """
    y, p = _check(labels, probs)
    n = len(y)
    if n_boot <= 0:
        return {k: None for k in ("accuracy", "auc", "sensitivity", "specificity")}
    rng = np.random.default_rng(seed)
    # Work in score order: a resample of positions in sorted order is a resample of the patches,
    # and the AUC then needs no per-resample gather.
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    group_starts = np.flatnonzero(np.r_[True, np.diff(p) != 0])
    pred_pos = (p >= threshold).astype(np.int32)
    y32 = y.astype(np.int32)
    correct = (pred_pos == y32).astype(np.int32)
    results: dict[str, list[np.ndarray]] = {k: [] for k in ("accuracy", "auc", "sensitivity", "specificity")}
    step = max(1, min(n_boot, max_elements // max(n, 1)))
    done = 0
    while done < n_boot:
        c = min(step, n_boot - done)
        counts = _resample_counts(rng, n, c)
        n_pos = counts @ y32
        n_neg = n - n_pos
        tp = counts @ (pred_pos * y32)
        tn = counts @ ((1 - pred_pos) * (1 - y32))
        with np.errstate(invalid="ignore", divide="ignore"):
            results["accuracy"].append((counts @ correct) / n)
            results["sensitivity"].append(np.where(n_pos > 0, tp / np.maximum(n_pos, 1), np.nan))
            results["specificity"].append(np.where(n_neg > 0, tn / np.maximum(n_neg, 1), np.nan))
        results["auc"].append(_weighted_auc(counts, y32, group_starts))
        done += c
    tail = (1 - confidence) / 2 * 100
    out: dict[str, list[float] | None] = {}
    for key, parts in results.items():
        values = np.concatenate(parts).astype(np.float64)
        values = values[~np.isnan(values)]
        if len(values):
            out[key] = [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
        else:
            out[key] = None
    return out
