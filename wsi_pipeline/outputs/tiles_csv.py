"""``tiles.csv``: ``minx,miny,width,height,prob_tumor`` per tissue tile (level-0 px, wsinfer's layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.result import SlideResult

NAME = "tiles.csv"


def write(folder: Path, result: SlideResult) -> None:
    cells, probs = result.scores.cells, result.scores.probs
    order = np.lexsort((cells[:, 1], cells[:, 0]))  # row-major
    write_tiles_csv(folder / NAME, result.grid.tile_boxes(cells[order]), probs[order])


def write_tiles_csv(path: Path, boxes: np.ndarray, probs: np.ndarray) -> Path:
    """wsinfer-style table: ``minx,miny,width,height,prob_tumor`` (level-0 px), one row per tile."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(boxes) != len(probs):
        raise ValueError(f"{len(boxes)} tile boxes but {len(probs)} probabilities")
    with open(path, "w", newline="") as fh:
        fh.write("minx,miny,width,height,prob_tumor\n")
        for (x, y, w, h), p in zip(np.rint(boxes).astype(np.int64).tolist(), probs.tolist(), strict=True):
            fh.write(f"{x},{y},{w},{h},{p:.6f}\n")
    return Path(path)
