"""Evaluate a model on a dataset and format the study's report (text and JSON-ready dict)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.data.split import stratified_sample
from wsi_pipeline.evaluation.metrics import (
    CLASS_NAMES,
    bootstrap_intervals,
    classification_report,
    confusion_matrix,
    roc_auc,
)
from wsi_pipeline.evaluation.predict import predict_dataset
from wsi_pipeline.models.finite import check_finite_outputs
from wsi_pipeline.models.io import LoadedModel


def _clean(value: float) -> float | None:
    """NaN (undefined metric) becomes ``None`` so the JSON stays valid."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def compute_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> dict:
    """All metrics of the report as plain JSON-ready values."""
    cm = confusion_matrix(labels, probs, threshold)
    (tn, fp), (fn, tp) = cm.tolist()
    n = int(cm.sum())
    intervals = bootstrap_intervals(labels, probs, threshold, n_boot=n_boot, seed=seed)
    return {
        "n": n,
        "n_tumor": int(fn + tp),
        "threshold": float(threshold),
        "accuracy": float((tn + tp) / n),
        "auc": _clean(roc_auc(labels, probs)),
        "sensitivity": _clean(tp / (tp + fn)) if tp + fn else None,
        "specificity": _clean(tn / (tn + fp)) if tn + fp else None,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "report": classification_report(labels, probs, threshold, class_names),
        "intervals": intervals,
        "bootstrap": {
            "resamples": int(n_boot),
            "seed": int(seed),
            "confidence": 0.95,
            "method": "percentile",
        },
    }


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Validation metrics stored with a trained model: :func:`compute_metrics` in the flat layout of
    the model config (accuracy, AUC, sensitivity, specificity, ``confusion_matrix`` as a dict, each
    scalar with a percentile-bootstrap 95 % interval ``<name>_ci``)."""
    metrics = compute_metrics(labels, probs, threshold, n_boot=n_boot, seed=seed)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    out = {key: metrics[key] for key in ("accuracy", "auc", "sensitivity", "specificity", "n", "threshold")}
    out["confusion_matrix"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    out.update({f"{name}_ci": interval for name, interval in metrics["intervals"].items()})
    return out


@dataclass
class EvaluationResult:
    """Predictions plus metrics for (a sample of) a dataset."""

    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    metrics: dict
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.metrics, **self.info}


def evaluate_model(
    model: LoadedModel,
    dataset: PatchDataset,
    sample: int | None = None,
    seed: int = 0,
    tta: bool = False,
    batch_size: int = 256,
    threshold: float = 0.5,
    n_boot: int = 1000,
    progress: bool = False,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> EvaluationResult:
    """Predict (optionally on a seeded stratified ``sample`` of ``sample`` patches; ``transform``
    applied to the uint8 patches first, e.g. a re-staining) and score."""
    labels_all = dataset.labels
    indices = (
        stratified_sample(labels_all, sample, seed) if sample else np.arange(len(labels_all), dtype=np.int64)
    )
    probs = predict_dataset(
        model, dataset, indices, batch_size=batch_size, tta=tta, progress=progress, transform=transform
    )
    check_finite_outputs(probs, str(model.path), "patches")
    labels = labels_all[indices]
    metrics = compute_metrics(labels, probs, threshold, n_boot, seed, tuple(model.config.class_names))
    info = {
        "sample": int(sample) if sample else None,
        "seed": int(seed),
        "tta": bool(tta),
        "model": {
            "path": str(model.path),
            "name": model.name,
            "architecture": model.config.architecture,
            "weights_sha256": model.weights_sha256,
        },
        "data": dataset.describe(),
    }
    return EvaluationResult(indices=indices, labels=labels, probs=probs, metrics=metrics, info=info)


def _ci(interval: list[float] | None) -> str:
    return f"(95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else "(95% CI n/a)"


def format_report(metrics: dict, digits: int = 4) -> str:
    """sklearn-style classification report, then accuracy/AUC with intervals and the confusion matrix."""
    report = metrics["report"]
    names = [k for k in report if not k.endswith(" avg")]
    width = max(12, *(len(k) for k in report))
    head = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    lines = [head, ""]

    def row(name: str) -> str:
        r = report[name]
        return (
            f"{name:>{width}} {r['precision']:>10.{digits}f} {r['recall']:>10.{digits}f} "
            f"{r['f1-score']:>10.{digits}f} {r['support']:>10d}"
        )

    lines += [row(n) for n in names]
    lines.append("")
    lines.append(
        f"{'accuracy':>{width}} {'':>10} {'':>10} {metrics['accuracy']:>10.{digits}f} {metrics['n']:>10d}"
    )
    lines += [row("macro avg"), row("weighted avg"), ""]
    iv = metrics["intervals"]
    auc = metrics["auc"]
    lines.append(f"{'accuracy':<11} {metrics['accuracy']:.{digits}f} {_ci(iv.get('accuracy'))}")
    lines.append(
        f"{'AUC':<11} {auc:.{digits}f} {_ci(iv.get('auc'))}"
        if auc is not None
        else "AUC         n/a (one class)"
    )
    for key in ("sensitivity", "specificity"):
        if metrics.get(key) is not None:
            lines.append(f"{key:<11} {metrics[key]:.{digits}f} {_ci(iv.get(key))}")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    cells = [f"pred {n}" for n in names]
    cw = max(10, *(len(c) for c in cells), len(str(max(tn, fp, fn, tp))))
    lines += [
        "",
        f"confusion matrix (threshold {metrics['threshold']:g}; rows true, columns predicted)",
        f"{'':>{width}} {cells[0]:>{cw}} {cells[1]:>{cw}}",
        f"{'true ' + names[0]:>{width}} {tn:>{cw}d} {fp:>{cw}d}",
        f"{'true ' + names[1]:>{width}} {fn:>{cw}d} {tp:>{cw}d}",
    ]
    return "\n".join(lines)
