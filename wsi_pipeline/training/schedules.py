"""Learning-rate schedules, as a function of training progress."""

from __future__ import annotations

import math

SCHEDULES = ("exponential", "cosine", "onecycle", "none")
#: Share of the run spent warming up in the one-cycle schedule.
ONECYCLE_WARMUP = 0.15


def lr_at(
    schedule: str,
    base_lr: float,
    epochs: int,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    decay: float = 0.9,
) -> float:
    """Learning rate for ``step`` of ``epoch`` (both 0-based) of an ``epochs``-long run.

    ``exponential``: ``base * decay**epoch`` (the study); ``cosine``: half a cosine from ``base`` to 0;
    ``onecycle``: linear warm-up from 4 % to 100 % over the first 15 % of steps, then a cosine down to
    0.2 %; ``none``: constant.
    """
    progress = (epoch + step / max(1, steps_per_epoch)) / epochs
    if schedule == "exponential":
        return base_lr * decay**epoch
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        if progress < ONECYCLE_WARMUP:
            return base_lr * (0.04 + 0.96 * progress / ONECYCLE_WARMUP)
        rest = (progress - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP)
        return base_lr * (0.002 + 0.998 * 0.5 * (1 + math.cos(math.pi * rest)))
    if schedule == "none":
        return base_lr
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of {SCHEDULES}")


def scaled_lr(base_lr: float, base_batch: int, batch: int) -> float:
    """Learning rate for a larger batch than the recipe's: scaled by the square root of the ratio
    (the usual rule for Adam-type optimisers)."""
    return base_lr * math.sqrt(batch / base_batch)
