"""Validation during and after training: the per-epoch log row and the metrics shipped with a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from wsi_pipeline.errors import TrainingDivergedError
from wsi_pipeline.evaluation.metrics import roc_auc
from wsi_pipeline.evaluation.report import binary_metrics
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.precision import Precision
from wsi_pipeline.training.data import TrainData
from wsi_pipeline.training.loop import EpochResult, bce, predict_logits


def validation_probs(
    model: nn.Module,
    data: TrainData,
    config: ModelConfig,
    device: torch.device,
    precision: Precision,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(logits, probabilities, labels)`` on the validation rows (in cache order)."""
    rows = np.sort(data.val_rows)
    logits = predict_logits(model, data.images[rows], config, device, precision, batch_size)
    if not np.isfinite(logits).all():
        raise TrainingDivergedError("training diverged: validation outputs are not finite; nothing saved")
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return logits, probs, data.labels[rows]


def epoch_row(
    model: nn.Module,
    data: TrainData,
    config: ModelConfig,
    device: torch.device,
    precision: Precision,
    batch_size: int,
    epoch: int,
    result: EpochResult,
    lr: float,
) -> dict[str, float]:
    """The ``log.csv`` row of a finished epoch."""
    logits, probs, labels = validation_probs(model, data, config, device, precision, batch_size)
    val_loss = float(bce(torch.from_numpy(logits), torch.from_numpy(labels.astype(np.float32))))
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": result.loss,
        "train_acc": result.accuracy,
        "val_loss": val_loss,
        "val_acc": float(((probs >= 0.5) == labels).mean()),
        "val_auc": roc_auc(labels, probs),
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
    }


def final_metrics(
    model: nn.Module,
    data: TrainData,
    config: ModelConfig,
    device: torch.device,
    precision: Precision,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """Accuracy, AUC, sensitivity, specificity with bootstrap intervals on the validation split."""
    _, probs, labels = validation_probs(model, data, config, device, precision, batch_size)
    metrics = binary_metrics(labels, probs, seed=seed)
    metrics["split"] = "validation"
    return metrics
