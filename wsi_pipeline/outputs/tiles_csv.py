"""``tiles.csv``: ``minx,miny,width,height,prob_<class>...`` per tissue tile (wsinfer's layout).

One ``prob_<class>`` column per class name of the model (``prob_normal,prob_tumor`` for the default
``["normal", "tumor"]``); ``prob_tumor`` is always there for the tumour (positive) class. Boxes are
the tiles in level-0 px, relative to the OpenSlide bounds' origin when the slide has bounds (QuPath's
coordinates; see :attr:`~wsi_pipeline.slide.info.SlideInfo.bounds_offset`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsi_pipeline.result import SlideResult

NAME = "tiles.csv"
DEFAULT_CLASS_NAMES = ("normal", "tumor")
TUMOR_COLUMN = "prob_tumor"


def write(folder: Path, result: SlideResult) -> None:
    cells, probs = result.scores.cells, result.scores.probs
    order = np.lexsort((cells[:, 1], cells[:, 0]))  # row-major
    boxes = result.grid.tile_boxes(cells[order])
    boxes[:, :2] -= np.asarray(result.summary.slide_info.bounds_offset, dtype=np.float64)
    write_tiles_csv(folder / NAME, boxes, probs[order], class_names(result))


def class_names(result: SlideResult) -> tuple[str, ...]:
    """The model's class names (negative first, tumour last), as its config records them."""
    config = result.summary.params.get("model_config")
    names = config.get("class_names") if isinstance(config, dict) else None
    if isinstance(names, list) and len(names) == 2 and all(isinstance(n, str) and n for n in names):
        return tuple(str(n) for n in names)
    return DEFAULT_CLASS_NAMES


def probability_columns(names: Sequence[str]) -> list[str]:
    """``prob_<class>`` per class (characters other than letters, digits, ``_`` and ``-`` become ``_``),
    plus ``prob_tumor`` for the last (tumour) class when no class is called so."""
    columns = ["prob_" + re.sub(r"[^0-9A-Za-z_-]+", "_", name.strip()) for name in names]
    if len(set(columns)) != len(columns):
        raise ValueError(f"class names {list(names)} give duplicate columns {columns}")
    return columns if TUMOR_COLUMN in columns else [*columns, TUMOR_COLUMN]


def class_probabilities(probs: np.ndarray, n_columns: int) -> np.ndarray:
    """``(N, n_columns)`` per-class probabilities from the tumour probability ``p``: ``1 - p, p``
    for the two classes, then ``p`` again for an added ``prob_tumor`` column."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, 1)
    return np.hstack([1.0 - p, p] + [p] * (n_columns - 2))


def write_tiles_csv(
    path: Path, boxes: np.ndarray, probs: np.ndarray, names: Sequence[str] = DEFAULT_CLASS_NAMES
) -> Path:
    """wsinfer-style table: ``minx,miny,width,height`` (level-0 px) and ``prob_<class>`` per tile."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(boxes) != len(probs):
        raise ValueError(f"{len(boxes)} tile boxes but {len(probs)} probabilities")
    columns = probability_columns(names)
    table = class_probabilities(probs, len(columns))
    with open(path, "w", newline="") as fh:
        fh.write(",".join(["minx", "miny", "width", "height", *columns]) + "\n")
        for (x, y, w, h), row in zip(np.rint(boxes).astype(np.int64).tolist(), table.tolist(), strict=True):
            fh.write(f"{x},{y},{w},{h}," + ",".join(f"{v:.6f}" for v in row) + "\n")
    return Path(path)
