"""What a checkpoint holds: the run's progress and selection state, and how to restore it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from wsi_pipeline.errors import TrainingError
from wsi_pipeline.precision import Precision
from wsi_pipeline.training.loop import WeightAverage


@dataclass
class RunState:
    """Progress of a run: completed epochs, early-stopping count, best validation score, history."""

    epoch: int = 0
    bad_epochs: int = 0
    best_score: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False

    def record(self, row: dict[str, float], score: float) -> bool:
        """Add an epoch's row; True when its ``score`` (lower is better) is a new best."""
        self.history.append(row)
        self.epoch = int(row["epoch"])
        improved = score < self.best_score
        if improved:
            self.best_score, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        return improved


def checkpoint(
    state: RunState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    average: WeightAverage | None,
    precision: Precision,
    n_val: int,
) -> dict[str, Any]:
    """Everything needed to continue after ``state.epoch`` as if never interrupted."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "average": average.state_dict() if average is not None else None,
        "epoch": state.epoch,
        "bad_epochs": state.bad_epochs,
        "best_score": state.best_score,
        "history": state.history,
        "split_n_val": n_val,
        "torch_rng": torch.get_rng_state(),  # dropout draws continue as if never interrupted
        **precision.as_dict(),
    }


def restore(
    saved: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    average: WeightAverage | None,
    n_val: int,
) -> tuple[RunState, Precision]:
    """Load a :func:`checkpoint` into the given objects; refuse one made with another split or settings."""
    if saved.get("split_n_val") != n_val:
        raise TrainingError("checkpoint was made with a different data split; cannot resume")
    if (saved.get("average") is None) != (average is None):
        raise TrainingError("checkpoint and settings disagree on ema_decay; cannot resume")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if average is not None:
        average.load_state_dict(saved["average"])
    if saved.get("torch_rng") is not None:
        torch.set_rng_state(saved["torch_rng"])
    name = saved.get("precision", "float32")
    precision = Precision(
        None if name == "float32" else getattr(torch, name), saved.get("precision_reason", "")
    )
    state = RunState(saved["epoch"], saved["bad_epochs"], saved["best_score"], saved["history"])
    return state, precision
