"""Pixels of a simulated slide, one row of cells at a time, at any pyramid level.

Level 0 shows each cell's patch in its D4 view (rotate ``k % 4`` quarter turns, then flip left-right
when ``k >= 4``: the convention of :func:`wsi_pipeline.training.augment.dihedral`), enlarged by the
integer ``upsample`` factor by pixel repetition (so an area-average back to the patch um/px gives
the patch itself). Level ``L`` is the exact 2**L area average of level 0, computed per cell, so no
level is ever held whole in memory.
"""

from __future__ import annotations

import math

import numpy as np

from wsi_pipeline.simulate.truth import GlassStyle, SlidePlan

N_GLASS = 8


def d4_view(patches: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0..7) of a stack of patches ``(n, h, w, 3)`` (:func:`wsi_pipeline.d4.dihedral`)."""
    import torch

    from wsi_pipeline.d4 import NHWC, dihedral

    return dihedral(torch.from_numpy(np.ascontiguousarray(patches)), k, NHWC).numpy()


def glass_tiles(style: GlassStyle, size: int) -> np.ndarray:
    """``(8, size, size, 3)`` uint8 glass: the base colour plus Gaussian noise, from the style's seed."""
    rng = np.random.default_rng(style.seed)
    noise = rng.normal(0.0, style.noise, (N_GLASS, size, size, 3))
    return np.clip(np.round(np.asarray(style.rgb, dtype=np.float64) + noise), 0, 255).astype(np.uint8)


def level_cell_px(patch_px: int, upsample: int, level: int) -> int | None:
    """Cell side in px at ``level`` (downsample 2**level), or None when it is not a whole number."""
    size = patch_px * upsample
    return size >> level if size % (1 << level) == 0 else None


def _resize(cells: np.ndarray, upsample: int, level: int) -> np.ndarray:
    """Level-0 cells are patches repeated ``upsample`` times; level L area-averages 2**L of them
    (rounded half up). Both steps commute with the D4 views."""
    g = math.gcd(upsample, 1 << level)
    repeat, shrink = upsample // g, (1 << level) // g
    if repeat > 1:
        cells = cells.repeat(repeat, axis=1).repeat(repeat, axis=2)
    if shrink > 1:
        total = np.zeros(cells[:, ::shrink, ::shrink].shape, dtype=np.uint32)
        for dy in range(shrink):
            for dx in range(shrink):
                total += cells[:, dy::shrink, dx::shrink]
        cells = ((total + shrink * shrink // 2) // (shrink * shrink)).astype(np.uint8)
    return cells


class SlideRenderer:
    """Renders cell rows of a plan from its patches (``patches[i]`` is dataset index ``used[i]``)."""

    def __init__(self, plan: SlidePlan, used: np.ndarray, patches: np.ndarray, upsample: int = 1) -> None:
        if upsample < 1 or int(upsample) != upsample:
            raise ValueError(f"upsample must be a positive integer, got {upsample}")
        used = np.asarray(used, dtype=np.int64)
        if len(used) != len(patches):
            raise ValueError(f"{len(used)} indices but {len(patches)} patches")
        self.plan = plan
        self.upsample = int(upsample)
        self.patch_px = plan.spec.patch_px
        glass = glass_tiles(plan.glass, self.patch_px)
        self._stack = np.concatenate(
            [np.asarray(patches, dtype=np.uint8).reshape(-1, *glass.shape[1:]), glass]
        )
        # Position of each cell's pixels in the stack: a used patch, or one of the glass tiles.
        where = np.searchsorted(used, plan.source)
        if plan.tissue.any() and not np.array_equal(used[where[plan.tissue]], plan.source[plan.tissue]):
            raise ValueError("patches are missing for some of the plan's dataset indices")
        self._stacks: dict[int, np.ndarray] = {}
        self._pos = np.where(plan.tissue, where, len(used) + plan.view.astype(np.int64) % N_GLASS)

    def level_shape(self, level: int) -> tuple[int, int]:
        side = level_cell_px(self.patch_px, self.upsample, level)
        if side is None:
            raise ValueError(f"level {level} does not divide the {self.patch_px * self.upsample} px cells")
        rows, cols = self.plan.source.shape
        return rows * side, cols * side

    def _level_stack(self, level: int) -> np.ndarray | None:
        """The patch stack resized to ``level`` once, when that is no bigger than the patches."""
        side = level_cell_px(self.patch_px, self.upsample, level)
        if side is None or side > self.patch_px:
            return None
        if level not in self._stacks:
            self._stacks[level] = _resize(self._stack, self.upsample, level)
        return self._stacks[level]

    def cell_row(self, level: int, row: int) -> np.ndarray:
        """Pixels of cell row ``row`` at ``level``: ``(side, cols * side, 3)`` uint8."""
        stack = self._level_stack(level)
        cells = (self._stack if stack is None else stack)[self._pos[row]]
        views = self.plan.view[row]
        tissue = self.plan.tissue[row]
        for k in range(1, 8):
            pick = tissue & (views == k)
            if pick.any():
                cells[pick] = d4_view(cells[pick], k)
        if stack is None:
            cells = _resize(cells, self.upsample, level)
        n, side = cells.shape[0], cells.shape[1]
        return cells.transpose(1, 0, 2, 3).reshape(side, n * side, 3)


def strips(renderer: SlideRenderer, level: int, height: int):
    """Yield ``(y0, pixels)`` horizontal strips of ``height`` px covering the level, top to bottom."""
    total, _ = renderer.level_shape(level)
    side = level_cell_px(renderer.patch_px, renderer.upsample, level)
    assert side is not None
    cache: dict[int, np.ndarray] = {}
    for y0 in range(0, total, height):
        y1 = min(total, y0 + height)
        r0, r1 = y0 // side, (y1 - 1) // side + 1
        for r in [r for r in cache if r < r0]:
            del cache[r]
        for r in range(r0, r1):
            if r not in cache:
                cache[r] = renderer.cell_row(level, r)
        rows = np.concatenate([cache[r] for r in range(r0, r1)]) if r1 - r0 > 1 else cache[r0]
        yield y0, rows[y0 - r0 * side : y1 - r0 * side]
