"""ROC curve and confusion-matrix figures (PNG, matplotlib Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.errors import OutputError
from wsi_pipeline.evaluation.metrics import CLASS_NAMES, roc_curve_points


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write plot: {exc.strerror or exc}") from exc
    return path


def plot_roc(
    labels: np.ndarray, probs: np.ndarray, path: Path, auc: float | None = None, title: str = ""
) -> Path:
    """ROC curve with the chance diagonal; needs both classes."""
    plt = _figure()
    fpr, tpr, _ = roc_curve_points(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    try:
        label = f"AUC = {auc:.4f}" if auc is not None else "ROC"
        ax.plot(fpr, tpr, lw=2, label=label)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False-positive rate", ylabel="True-positive rate")
        ax.set_title(title or "ROC curve")
        ax.legend(loc="lower right")
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_confusion_matrix(
    matrix: list[list[int]] | np.ndarray,
    path: Path,
    class_names: tuple[str, ...] = CLASS_NAMES,
    title: str = "",
    threshold: float = 0.5,
) -> Path:
    """2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` with counts and row percentages."""
    plt = _figure()
    cm = np.asarray(matrix, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    try:
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                colour = "white" if frac[i, j] > 0.5 else "black"
                ax.text(j, i, f"{cm[i, j]}\n{100 * frac[i, j]:.1f}%", ha="center", va="center", color=colour)
        ax.set_xticks([0, 1], [f"pred {n}" for n in class_names])
        ax.set_yticks([0, 1], [f"true {n}" for n in class_names])
        ax.set_title(title or f"Confusion matrix (threshold {threshold:g})")
        return _save(fig, Path(path))
    finally:
        plt.close(fig)
