"""Build a large benchmark slide from real PCam/Kaggle patches, streamed tile by tile.

The slide is a grid of 96 px cells at the model's um/px (0.972): a few elliptical "tissue sections"
filled with real label-0 patches, tumour blobs of label-1 patches inside them, and plain glass around
them, so tissue masking matters. It is written as a tiled pyramidal generic TIFF with JPEG tiles and
its um/px in the TIFF resolution tags (what OpenSlide reports as ``openslide.mpp-x``). Every pyramid
level is composed from per-level pre-shrunk patches, so memory stays at one strip of tiles.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from wsi_pipeline.pcam import PCAM_MPP, PCAM_PATCH

CELL = PCAM_PATCH
TILE = 256
BACKGROUND = (242, 241, 244)


@dataclass
class MosaicLayout:
    """``cells[r, c]``: index into the patch stack, or -1 for glass. ``truth``: label or -1."""

    cells: np.ndarray
    truth: np.ndarray


def load_patches(patch_dir: Path, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` random 96x96 RGB patches (uint8) and their labels from a Kaggle-layout folder."""
    with open(patch_dir / "train_labels.csv", newline="") as fh:
        rows = [(r["id"], int(r["label"])) for r in csv.DictReader(fh)]
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(rows))[:limit]
    images, labels = [], []
    for i in chosen:
        pid, label = rows[i]
        path = patch_dir / "train" / f"{pid}.jpg"
        if not path.is_file():
            path = patch_dir / "train" / f"{pid}.tif"
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB")))
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int8)


def make_layout(grid: int, labels: np.ndarray, seed: int, rows: int | None = None) -> MosaicLayout:
    """Three tissue ellipses (~45 % of the slide) with two tumour blobs each; ``grid`` columns and
    ``rows`` rows of cells (default: square)."""
    rng = np.random.default_rng(seed)
    rows = rows or grid
    yy, xx = np.mgrid[0:rows, 0:grid] / np.array([rows, grid], dtype=np.float64)[:, None, None]
    tissue = np.zeros((rows, grid), bool)
    tumour = np.zeros((rows, grid), bool)
    for cy, cx, ry, rx in ((0.28, 0.30, 0.24, 0.22), (0.30, 0.75, 0.22, 0.18), (0.74, 0.52, 0.22, 0.38)):
        section = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        tissue |= section
        for _ in range(2):
            ty = cy + rng.uniform(-0.5, 0.5) * ry
            tx = cx + rng.uniform(-0.5, 0.5) * rx
            r = rng.uniform(0.03, 0.07)
            tumour |= section & (((yy - ty) / r) ** 2 + ((xx - tx) / r) ** 2 <= 1.0)
    normal_ids = np.flatnonzero(labels == 0)
    tumour_ids = np.flatnonzero(labels == 1)
    cells = np.full((rows, grid), -1, dtype=np.int32)
    normal_cells = tissue & ~tumour
    cells[normal_cells] = rng.choice(normal_ids, int(normal_cells.sum()))
    cells[tumour] = rng.choice(tumour_ids, int(tumour.sum()))
    truth = np.where(cells >= 0, labels[np.maximum(cells, 0)], -1).astype(np.int8)
    return MosaicLayout(cells=cells, truth=truth)


def _shrink(patches: np.ndarray, factor: int) -> np.ndarray:
    """Area-average 96 px patches by an integer factor (96 / factor px each)."""
    if factor == 1:
        return patches
    n, s = patches.shape[0], CELL // factor
    blocks = patches.reshape(n, s, factor, s, factor, 3).astype(np.float32).mean(axis=(2, 4))
    return np.round(blocks).astype(np.uint8)


class MosaicRenderer:
    """Renders any row strip of any pyramid level (level L = downsample 2**L)."""

    def __init__(self, patches: np.ndarray, layout: MosaicLayout) -> None:
        self.layout = layout
        self.patches = patches
        self._cache: dict[int, np.ndarray] = {}

    def level_shape(self, level: int) -> tuple[int, int]:
        side = CELL // (2**level)
        g_h, g_w = self.layout.cells.shape
        return g_h * side, g_w * side

    def rows(self, level: int, y0: int, y1: int) -> np.ndarray:
        """Pixels ``[y0:y1, :]`` of ``level`` as (y1 - y0, width, 3) uint8."""
        factor = 2**level
        if factor not in self._cache:
            shrunk = _shrink(self.patches, factor)
            glass = np.empty((1,) + shrunk.shape[1:], np.uint8)
            glass[:] = BACKGROUND
            self._cache[factor] = np.concatenate([shrunk, glass])  # index -1 -> glass
        stack = self._cache[factor]
        side = CELL // factor
        r0, r1 = y0 // side, (y1 - 1) // side + 1
        cells = self.layout.cells[r0:r1]
        strip = stack[cells]  # (rows, cols, side, side, 3)
        strip = strip.transpose(0, 2, 1, 3, 4).reshape((r1 - r0) * side, cells.shape[1] * side, 3)
        return strip[y0 - r0 * side : y1 - r0 * side]


def _tiles(renderer: MosaicRenderer, level: int) -> Iterator[np.ndarray]:
    height, width = renderer.level_shape(level)
    for ty in range(0, height, TILE):
        strip = renderer.rows(level, ty, min(height, ty + TILE))
        for tx in range(0, width, TILE):
            tile = np.empty((TILE, TILE, 3), np.uint8)
            tile[:] = BACKGROUND
            part = strip[:, tx : tx + TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            yield tile


def write_mosaic_tiff(path: Path, renderer: MosaicRenderer, mpp: float, quality: int = 90) -> Path:
    """Tiled pyramidal generic TIFF (JPEG tiles, YCbCr), levels down to ~1,000 px."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    height, width = renderer.level_shape(0)
    levels = [0]
    while max(height, width) // 2 ** (levels[-1] + 1) >= 1000 and CELL % 2 ** (levels[-1] + 1) == 0:
        levels.append(levels[-1] + 1)
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level in levels:
            h, w = renderer.level_shape(level)
            level_mpp = mpp * 2**level
            tif.write(
                _tiles(renderer, level),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
                metadata=None,
            )
    tmp.replace(path)
    return path


def build_mosaic(
    out_path: Path,
    patch_dir: Path,
    grid: int = 200,
    mpp: float = PCAM_MPP,
    seed: int = 0,
    n_patches: int = 4000,
    rows: int | None = None,
) -> tuple[Path, MosaicLayout]:
    """Write the mosaic slide (if not cached) and return it with its layout (saved beside it)."""
    out_path = Path(out_path)
    layout_path = out_path.with_suffix(".layout.npz")
    if out_path.is_file() and layout_path.is_file():
        saved = np.load(layout_path)
        return out_path, MosaicLayout(cells=saved["cells"], truth=saved["truth"])
    patches, labels = load_patches(Path(patch_dir), n_patches, seed)
    layout = make_layout(grid, labels, seed, rows)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_mosaic_tiff(out_path, MosaicRenderer(patches, layout), mpp)
    np.savez(layout_path, cells=layout.cells, truth=layout.truth)
    return out_path, layout
