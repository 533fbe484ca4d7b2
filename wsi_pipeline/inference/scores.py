"""Stage 4 of the slide path: the tumour probability of every analysed tile (:class:`TileScores`),
with where the time went (:class:`InferenceStats`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class InferenceStats:
    """Where the inference time went (seconds; ``read_s`` sums all reader threads) and how."""

    read_s: float = 0.0
    infer_s: float = 0.0
    wait_s: float = 0.0
    total_s: float = 0.0
    n_blocks: int = 0
    n_batches: int = 0
    device: str = "cpu"
    precision: str = "float32"
    precision_reason: str = ""  # why this precision (requested, measured speed-up, no native bf16, ...)
    mode: str = "tiles"  # "tiles" (tile by tile) or "dense xN" (dense passes, N shift-and-stitch offsets)
    frozen: bool = False  # the model ran as a traced + frozen TorchScript graph (CPU)

    def __post_init__(self) -> None:
        if (
            min(self.read_s, self.infer_s, self.wait_s, self.total_s) < 0
            or min(self.n_blocks, self.n_batches) < 0
        ):
            raise ValueError("inference stats must not be negative")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass(frozen=True)
class TileScores:
    """Tumour probability ``probs[k]`` (float32) of grid cell ``cells[k] = (row, col)`` (int64)."""

    cells: np.ndarray
    probs: np.ndarray
    stats: InferenceStats

    def __post_init__(self) -> None:
        cells = np.asarray(self.cells)
        probs = np.asarray(self.probs)
        if cells.ndim != 2 or cells.shape[1] != 2 or not np.issubdtype(cells.dtype, np.integer):
            raise ValueError(f"cells must be an (N, 2) integer array, got {cells.dtype} {cells.shape}")
        if probs.shape != (len(cells),) or probs.dtype != np.float32:
            raise ValueError(
                f"probs must be float32 of shape ({len(cells)},), got {probs.dtype} {probs.shape}"
            )
        if len(cells) and cells.min() < 0:
            raise ValueError("cells must have non-negative (row, col) indices")
        finite = probs[np.isfinite(probs)]
        if len(finite) and (finite.min() < 0.0 or finite.max() > 1.0):
            raise ValueError("tile probabilities must lie in [0, 1]")
        object.__setattr__(self, "cells", cells.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.cells)
