"""Dense (fully convolutional) scoring of a block: one network pass per region, each tile's output read
off the logit map.

A model qualifies when its module has a ``dense(x)`` method and ``dense_tile`` / ``dense_stride``
attributes (``dense_cnn`` and ensembles made only of dense-capable members, see
:func:`dense_geometry`): ``dense`` maps a ``(N, 3, tile + k * s, tile + m * s)`` region to the logits
``(N, 1, k + 1, m + 1)`` of its ``tile`` px tiles at the network's own output stride ``s`` (16 for
``dense_cnn``). Preprocessing must be per pixel (no centre crop smaller than the tile, no stain
normalisation, whose Macenko statistics are per image), and the engine's tiles must be the
network's tile size.

Strides that are multiples of ``s`` are read off one map (every ``stride / s``-th cell); finer ones
by shift-and-stitch: with ``g = gcd(stride, s)`` the region is run at each of the
``(s / g) ** 2`` offsets ``(dy, dx)``, multiples of ``g`` below ``s``, and a tile whose top-left is
``(y, x)`` is read from the map of offset ``(y mod s, x mod s)``. Cost relative to tile-by-tile is
about ``2 * (s / g) ** 2 * stride ** 2 / tile ** 2`` (the area each tile adds, times the passes, times
:data:`DENSE_AREA_COST`), so :meth:`DensePlan.pays_off` picks dense only below 1: for ``dense_cnn``
strides up to 64 that are multiples of 16 (stride 32: 0.22, i.e. 4.5x cheaper than 9x the tiles),
8 px multiples up to 32, not 96 (twice the cost of tile by tile, which also skips a block's glass).

A block is cut into chunks of at most :data:`CHUNK_CELLS` map cells per side (bounded activation
memory, about 850 px regions); chunks without a requested cell are not run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wsi_pipeline.models.io import LoadedModel

#: Map cells per side of one dense pass (region ``(CHUNK_CELLS - 1) * s + tile`` px: 848 px for dense_cnn).
CHUNK_CELLS = 48
DENSE_MODES = ("auto", "on", "off")
#: Cost of one dense pass over a tile's area relative to scoring that tile alone: the deep layers run
#: at every position of their map instead of the few a single tile needs (dense_cnn at its default
#: widths: 231 vs 115 M multiply-adds per 96 x 96 px; measured wall time 2-3x).
DENSE_AREA_COST = 2.0


def dense_geometry(module: torch.nn.Module) -> tuple[int, int] | None:
    """``(tile, output stride)`` of a dense-capable module, ``None`` for any other."""
    tile, stride = getattr(module, "dense_tile", None), getattr(module, "dense_stride", None)
    if not callable(getattr(module, "dense", None)) or not tile or not stride:
        return None
    return int(tile), int(stride)


@dataclass(frozen=True)
class DensePlan:
    """How a dense-capable network covers tiles of ``tile`` px at ``stride`` px (see module docstring)."""

    tile: int
    net_stride: int
    stride: int

    @property
    def step(self) -> int:
        """``g``: the offsets of shift-and-stitch are multiples of it."""
        return math.gcd(self.stride, self.net_stride)

    @property
    def n_shifts(self) -> int:
        """Passes per region: 1 when ``stride`` is a multiple of the network's stride."""
        return (self.net_stride // self.step) ** 2

    @property
    def relative_cost(self) -> float:
        """Approximate cost of dense over tile-by-tile scoring of a full block: the area each tile
        adds, times the passes, times :data:`DENSE_AREA_COST`."""
        return DENSE_AREA_COST * self.n_shifts * self.stride**2 / self.tile**2

    def pays_off(self) -> bool:
        return self.relative_cost < 1.0


def dense_plan(model: LoadedModel, tile_px: int, stride_px: int) -> DensePlan | None:
    """The dense plan for ``model`` at this tiling, or ``None`` when the model does not qualify."""
    geometry = dense_geometry(model.module)
    if geometry is None:
        return None
    tile, net_stride = geometry
    crop = int(model.config.center_crop or 0)
    if tile_px != tile or 0 < crop < tile_px or model.config.stain_normalization:
        return None
    return DensePlan(tile, net_stride, int(stride_px))


def choose_dense(model: LoadedModel, tile_px: int, stride_px: int, mode: str) -> DensePlan | None:
    """The plan to use: ``mode`` ``"auto"`` (dense where it qualifies and pays off), ``"on"`` (dense
    wherever the model qualifies) or ``"off"`` (tile by tile)."""
    if mode not in DENSE_MODES:
        raise ValueError(f"dense mode must be one of {DENSE_MODES}, got {mode!r}")
    plan = dense_plan(model, tile_px, stride_px) if mode != "off" else None
    if plan is None or (mode == "auto" and not plan.pays_off()):
        return None
    return plan


def default_stride(module: torch.nn.Module, patch_size: int) -> int:
    """The stride ``wsi-infer`` uses when none is given: 32 model px (the PCam label square) for a
    dense-capable model, which scores it at about the cost of stride 96 tile by tile; else the
    patch size (non-overlapping tiles)."""
    geometry = dense_geometry(module)
    if geometry is not None and geometry[0] == patch_size and 32 % geometry[1] == 0:
        return 32
    return int(patch_size)


class DenseRunner:
    """Scores the requested tiles of blocks with dense passes: ``forward`` is ``module.dense`` (or its
    frozen graph)."""

    def __init__(
        self,
        model: LoadedModel,
        forward: Callable[[torch.Tensor], torch.Tensor],
        plan: DensePlan,
        autocast: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        self.model, self.forward, self.plan = model, forward, plan
        self.autocast = autocast
        self.infer_s = 0.0
        self.n_passes = 0

    def score(self, pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Probabilities (float32) of the tiles at block-relative grid cells ``(rows, cols)`` of the
        block image ``pixels`` (uint8 ``(H, W, 3)``)."""
        t0 = time.perf_counter()
        p = self.plan
        s, g = p.net_stride, p.step
        y, x = rows.astype(np.int64) * p.stride, cols.astype(np.int64) * p.stride
        out = np.full(len(rows), np.nan, dtype=np.float32)
        shift_y, shift_x = y % s, x % s
        for dy in range(0, s, g):
            for dx in range(0, s, g):
                sel = np.flatnonzero((shift_y == dy) & (shift_x == dx))
                if len(sel):
                    qy, qx = (y[sel] - dy) // s, (x[sel] - dx) // s
                    out[sel] = self._shifted(pixels, dy, dx, qy, qx)
        self.infer_s += time.perf_counter() - t0
        return out

    def _shifted(self, pixels: np.ndarray, dy: int, dx: int, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        """Map values at cells ``(qy, qx)`` of the map of the region shifted by ``(dy, dx)``."""
        s, tile = self.plan.net_stride, self.plan.tile
        out = np.empty(len(qy), dtype=np.float32)
        for y_part in _chunks(qy):
            for x_part in _chunks(qx):
                sel = np.flatnonzero(
                    (qy >= y_part[0]) & (qy < y_part[1]) & (qx >= x_part[0]) & (qx < x_part[1])
                )
                if not len(sel):
                    continue
                y0, y1 = int(qy[sel].min()), int(qy[sel].max())
                x0, x1 = int(qx[sel].min()), int(qx[sel].max())
                region = pixels[dy + y0 * s : dy + y1 * s + tile, dx + x0 * s : dx + x1 * s + tile]
                probs = self._run(region)
                out[sel] = probs[qy[sel] - y0, qx[sel] - x0]
        return out

    def _run(self, region: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), self.autocast or contextlib.nullcontext():
            batch = self.model.preprocess(torch.from_numpy(np.ascontiguousarray(region))[None])
            logits = self.forward(batch).float()
        self.n_passes += 1
        return self.model.probability(logits[0, 0]).numpy()  # calibrated, as the tile path


def _chunks(q: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of at most :data:`CHUNK_CELLS` map cells, of near-equal length, over the
    span of ``q``."""
    lo, hi = int(q.min()), int(q.max()) + 1
    n = -(-(hi - lo) // CHUNK_CELLS)
    edges = [lo + (hi - lo) * i // n for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))
