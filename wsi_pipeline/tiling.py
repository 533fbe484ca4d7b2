"""The grid of model-resolution tiles over a slide, in level-0 coordinates.

A model sees ``patch_size`` px tiles at ``model_mpp`` um/px. On a slide of ``slide_mpp`` um/px one
model pixel spans ``scale = model_mpp / slide_mpp`` level-0 px, so a tile spans
``tile_size0 = patch_size * scale`` and neighbouring tiles are ``stride0 = stride * scale`` apart.

Heatmap geometry: heatmap cell ``(r, c)`` holds the prediction for the tile whose top-left
corner is ``(origin_x + c * stride0, origin_y + r * stride0)`` (level-0, fractional allowed).
The PCam label refers to the centre ``label_size`` (32) px of that tile, i.e. the level-0 square
starting ``label_offset0 = (patch_size - label_size) / 2 * scale`` inside the tile. With
``stride == label_size`` these centre squares tile the slide without gaps or overlap, so cell
``(r, c)`` exactly represents the level-0 square
``[label_x0 + c * stride0, label_x0 + (c + 1) * stride0)`` (``label_x0 = origin_x + label_offset0``).
Only tiles entirely inside the slide are on the grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_pipeline.errors import OptionError

PCAM_MPP = 0.972  # um/px of PatchCamelyon patches (level 2 of 0.243 um/px Camelyon16 scans)
PCAM_PATCH = 96
PCAM_LABEL = 32

_EPS = 1e-9


@dataclass(frozen=True)
class Tiles:
    """A set of grid cells: row/col indices and level-0 top-left corners (float)."""

    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    tile_size0: float

    def __len__(self) -> int:
        return int(self.rows.size)

    def select(self, keep: np.ndarray) -> Tiles:
        """The tiles where the boolean (or index) array ``keep`` selects, e.g. ``fractions >= 0.25``."""
        keep = np.asarray(keep)
        return Tiles(self.rows[keep], self.cols[keep], self.x[keep], self.y[keep], self.tile_size0)


@dataclass(frozen=True)
class Block:
    """A rectangle of grid cells ``rows [r0, r1) x cols [c0, c1)`` read as one image.

    Read it with ``read_region_at_mpp(reader, x0, y0, width0, height0, out_w, out_h)``; the tile of
    cell (r, c) is then ``image[(r - r0) * stride : ... + patch, (c - c0) * stride : ... + patch]``.
    """

    r0: int
    c0: int
    r1: int
    c1: int
    x0: float
    y0: float
    width0: float
    height0: float
    out_w: int
    out_h: int
    patch_size: int
    stride: int

    def extract(self, image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Cut the (N, patch, patch, 3) tiles of cells ``(rows[k], cols[k])`` out of the block image."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        p, s = self.patch_size, self.stride
        out = np.empty((rows.size, p, p, image.shape[2]), dtype=image.dtype)
        for k, (r, c) in enumerate(zip(rows - self.r0, cols - self.c0, strict=True)):
            out[k] = image[r * s : r * s + p, c * s : c * s + p]
        return out


@dataclass(frozen=True)
class TileGrid:
    """Regular grid of model tiles over a slide (see the module docstring for the geometry)."""

    slide_width: int
    slide_height: int
    slide_mpp: float
    patch_size: int = PCAM_PATCH
    model_mpp: float = PCAM_MPP
    stride: int | None = None  # model px; None = patch_size (non-overlapping tiles)
    origin_x: float = 0.0
    origin_y: float = 0.0
    label_size: int = PCAM_LABEL

    def __post_init__(self) -> None:
        if self.stride is None:
            object.__setattr__(self, "stride", self.patch_size)
        checks = {
            "slide mpp": self.slide_mpp,
            "model mpp": self.model_mpp,
            "patch size": self.patch_size,
            "stride": self.stride,
        }
        for name, value in checks.items():
            if not (value is not None and value > 0 and math.isfinite(value)):
                raise OptionError(f"{name} must be a positive number, got {value!r}")
        if int(self.stride) != self.stride:
            raise OptionError(f"stride must be a whole number of model pixels, got {self.stride!r}")
        if self.label_size > self.patch_size:
            raise OptionError(f"label size {self.label_size} exceeds patch size {self.patch_size}")

    # -- geometry ------------------------------------------------------------
    @property
    def scale(self) -> float:
        """Level-0 px per model px."""
        return self.model_mpp / self.slide_mpp

    @property
    def tile_size0(self) -> float:
        return self.patch_size * self.scale

    @property
    def stride0(self) -> float:
        return int(self.stride) * self.scale

    @property
    def label_offset0(self) -> float:
        """Offset of the centre label square inside a tile, level-0 px."""
        return (self.patch_size - self.label_size) / 2 * self.scale

    @property
    def label_size0(self) -> float:
        return self.label_size * self.scale

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols): only tiles lying entirely inside the slide."""
        return (
            _count(self.slide_height - self.origin_y, self.tile_size0, self.stride0),
            _count(self.slide_width - self.origin_x, self.tile_size0, self.stride0),
        )

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def cell_origin(self, row: float, col: float) -> tuple[float, float]:
        """Level-0 top-left of the tile of heatmap cell (row, col)."""
        return (self.origin_x + col * self.stride0, self.origin_y + row * self.stride0)

    def cell_label_box(self, row: float, col: float) -> tuple[float, float, float, float]:
        """Level-0 ``(x, y, w, h)`` of the centre label square of cell (row, col)'s tile."""
        x, y = self.cell_origin(row, col)
        return (x + self.label_offset0, y + self.label_offset0, self.label_size0, self.label_size0)

    def tiles(self) -> Tiles:
        """All cells of the grid in row-major order."""
        rows, cols = self.shape
        rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        x, y = self.cell_origin(rr, cc)
        return Tiles(
            rr, cc, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), self.tile_size0
        )

    # -- block reads -----------------------------------------------------------
    def block(self, r0: int, c0: int, r1: int, c1: int) -> Block:
        """Geometry to read cells ``rows [r0, r1) x cols [c0, c1)`` as one model-resolution image."""
        if not (r1 > r0 and c1 > c0):
            raise ValueError(f"empty block rows [{r0}, {r1}) cols [{c0}, {c1})")
        stride = int(self.stride)
        out_w = (c1 - c0 - 1) * stride + self.patch_size
        out_h = (r1 - r0 - 1) * stride + self.patch_size
        x0, y0 = self.cell_origin(r0, c0)
        return Block(
            r0,
            c0,
            r1,
            c1,
            x0,
            y0,
            out_w * self.scale,
            out_h * self.scale,
            out_w,
            out_h,
            self.patch_size,
            stride,
        )

    def iter_blocks(self, cells_per_side: int, selected: np.ndarray | None = None) -> Iterator[Block]:
        """Blocks of up to ``cells_per_side`` x ``cells_per_side`` cells covering the grid, row-major.

        ``selected`` (bool, grid shape) skips blocks holding no selected cell and shrinks each block
        to the bounding box of its selected cells.
        """
        rows, cols = self.shape
        n = max(1, int(cells_per_side))
        for r0 in range(0, rows, n):
            for c0 in range(0, cols, n):
                r1, c1 = min(r0 + n, rows), min(c0 + n, cols)
                if selected is None:
                    yield self.block(r0, c0, r1, c1)
                    continue
                sub = np.asarray(selected)[r0:r1, c0:c1]
                if not sub.any():
                    continue
                rr, cc = np.nonzero(sub)
                yield self.block(r0 + rr.min(), c0 + cc.min(), r0 + rr.max() + 1, c0 + cc.max() + 1)

    def attrs(self) -> dict[str, Any]:
        """JSON-ready description of the geometry (for Zarr attributes / summary.json)."""
        rows, cols = self.shape
        return {
            "grid_shape": [rows, cols],
            "slide_size": [self.slide_width, self.slide_height],
            "slide_mpp": self.slide_mpp,
            "model_mpp": self.model_mpp,
            "patch_size": self.patch_size,
            "stride": int(self.stride),
            "label_size": self.label_size,
            "level0_px_per_model_px": self.scale,
            "tile_size_level0": self.tile_size0,
            "stride_level0": self.stride0,
            "cell_origin_level0": [self.origin_x, self.origin_y],
            "label_offset_level0": self.label_offset0,
            "label_size_level0": self.label_size0,
            "cell_geometry": (
                "cell (r, c) = tile with level-0 top-left (cell_origin_level0 + (c, r) * stride_level0), "
                "size tile_size_level0; its label region is the centre label_size model px, at "
                "label_offset_level0 inside the tile"
            ),
        }


def _count(extent: float, tile: float, stride: float) -> int:
    if extent + _EPS * max(1.0, tile) < tile:
        return 0
    return int(math.floor((extent - tile) / stride + _EPS)) + 1
