"""Cell-grid geometry of a simulated slide: irregular tissue sections and compact tumour lesions.

Everything here works on a boolean grid of cells (one cell = one patch) and draws only from the
given :class:`numpy.random.Generator`, so the same generator state gives the same layout. Sizes are
in cells; the caller converts to mm (``cell_um``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)
_CORNERS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)


class LayoutError(RuntimeError):
    """A layout could not be drawn with the requested constraints (the caller re-draws)."""


def _star_radius(
    shape: tuple[int, int], centre: tuple[float, float], angle: float, aspect: float, rng: np.random.Generator
) -> np.ndarray:
    """Normalised radius of every cell centre in a rotated, elongated star-shaped blob.

    The blob at scale ``s`` is ``radius <= s``: an ellipse (axis ratio ``aspect``, long axis at
    ``angle``) whose edge wobbles by ``1 + sum_k a_k cos(k theta + phi_k)`` for k = 2..7, amplitudes
    summing to at most 0.5, times a smooth random field of +-12 % (so edges are ragged, not radial).
    """
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64) + 0.5
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
    theta = np.arctan2(v, u)
    ks = np.arange(2, 8)
    amps = rng.uniform(0.0, 1.0, len(ks)) / ks
    amps *= rng.uniform(0.25, 0.5) / amps.sum()
    phases = rng.uniform(0, 2 * np.pi, len(ks))
    edge = 1.0 + (amps[:, None, None] * np.cos(ks[:, None, None] * theta + phases[:, None, None])).sum(0)
    # Smooth 2-D noise roughens the edge on a scale of a few cells (may cut small bays or holes).
    rough = ndimage.gaussian_filter(rng.normal(size=shape), sigma=max(1.5, min(shape) / 24), mode="wrap")
    rough *= 0.12 / max(float(rough.std()), 1e-9)
    return np.hypot(u, v) / edge * (1.0 + rough)


def _partition(shape: tuple[int, int], n: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """``n`` (2 or 3) rectangles (r0, c0, r1, c1) tiling the grid: cuts across the longer side, and for
    three sections either three strips or a half plus two quarters."""
    rows, cols = shape
    transpose = cols < rows or (cols == rows and rng.random() < 0.5)
    long_, short = (rows, cols) if transpose else (cols, rows)
    if n == 2:
        cut = int(round(rng.uniform(0.42, 0.58) * long_))
        boxes = [(0, 0, short, cut), (0, cut, short, long_)]
    elif rng.random() < 0.5:
        a, b = sorted(int(round(x * long_)) for x in (rng.uniform(0.3, 0.37), rng.uniform(0.63, 0.7)))
        boxes = [(0, 0, short, a), (0, a, short, b), (0, b, short, long_)]
    else:
        cut = int(round(rng.uniform(0.45, 0.55) * long_))
        mid = int(round(rng.uniform(0.42, 0.58) * short))
        boxes = [(0, 0, short, cut), (0, cut, mid, long_), (mid, cut, short, long_)]
        if rng.random() < 0.5:  # the half on the other side
            boxes = [(0, 0, mid, long_ - cut), (mid, 0, short, long_ - cut), (0, long_ - cut, short, long_)]
    if transpose:
        boxes = [(c0, r0, c1, r1) for r0, c0, r1, c1 in boxes]
    return boxes


def tissue_sections(
    shape: tuple[int, int],
    rng: np.random.Generator,
    n_sections: int,
    coverage: tuple[float, float] = (0.35, 0.60),
    attempts: int = 50,
) -> np.ndarray:
    """int8 grid: 0 = glass, k = tissue section k (1..n_sections).

    The grid is cut into ``n_sections`` rectangles; each holds one wobbly elongated blob kept one
    cell inside its rectangle, so sections are apart and off the slide edge. A common scale of the
    blobs sets the total tissue fraction to a random value inside ``coverage``; each section is one
    8-connected piece (stray digitisation fragments are dropped).
    """
    lo, hi = coverage
    for _ in range(attempts):
        radii, limits = [], []
        for r0, c0, r1, c1 in _partition(shape, n_sections, rng):
            h, w = r1 - r0, c1 - c0
            centre = (r0 + h * rng.uniform(0.45, 0.55), c0 + w * rng.uniform(0.45, 0.55))
            angle = (0.0 if w >= h else np.pi / 2) + rng.normal(0, 0.25)
            aspect = min(1.0, min(h, w) / max(h, w)) * rng.uniform(0.75, 1.0)
            radius = _star_radius(shape, centre, angle, aspect, rng)
            inner = np.zeros(shape, dtype=bool)
            inner[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = True
            radii.append(radius)
            limits.append(float(radius[~inner].min()))  # largest scale that stays inside
        target = rng.uniform(lo + 0.02, hi - 0.02) * radii[0].size
        low, high = 0.0, 1.0
        for _ in range(40):  # common fraction of each blob's largest scale
            mid = 0.5 * (low + high)
            area = sum(int((r < mid * m).sum()) for r, m in zip(radii, limits, strict=True))
            low, high = (mid, high) if area < target else (low, mid)
        labels = np.zeros(shape, dtype=np.int8)
        for k, (radius, limit) in enumerate(zip(radii, limits, strict=True), start=1):
            blob = radius < low * limit
            pieces, count = ndimage.label(blob, structure=_EIGHT)
            if count > 1:
                blob = pieces == 1 + int(np.argmax(ndimage.sum(blob, pieces, range(1, count + 1))))
            labels[blob] = k
        if lo <= (labels > 0).mean() <= hi and all((labels == k).any() for k in range(1, n_sections + 1)):
            return labels
    raise LayoutError(f"no {n_sections}-section layout of {shape} covering {coverage} found")


def max_feret(cells: np.ndarray) -> float:
    """Longest distance between corners of the unit squares at ``cells`` (row, col): the max Feret
    diameter of their union, in cells (one cell: sqrt(2))."""
    from wsi_pipeline.aggregation import max_feret_cells

    return max_feret_cells(cells)


def grow_lesion(
    section: np.ndarray, target: float, rng: np.random.Generator, min_cells: int = 1
) -> np.ndarray:
    """(n, 2) cells of one compact, irregular, 4-connected blob inside ``section`` whose max Feret
    diameter first reaches ``target`` cells.

    Random growth from a seed deep inside the section: each step adds one frontier cell, chosen with
    weight (blob neighbours)^2 (fills concavities, keeps it compact) times a preference for cells
    near the seed in a random, elongated and wobbly metric (gives the blob an irregular shape).
    """
    depth = ndimage.distance_transform_edt(np.pad(section, 1))[1:-1, 1:-1]
    need = min(target / 2.0, float(depth.max()) * 0.8)
    candidates = np.argwhere(section & (depth >= need))
    if not len(candidates):
        raise LayoutError("section too small for the lesion")
    seed = candidates[rng.integers(len(candidates))]
    aspect, angle = rng.uniform(1.0, 1.8), rng.uniform(0, np.pi)
    ks = np.arange(2, 5)
    amps, phases = rng.uniform(0, 0.25, len(ks)) / ks, rng.uniform(0, 2 * np.pi, len(ks))
    half = int(np.ceil(target)) + 3
    r0, c0 = max(0, seed[0] - half), max(0, seed[1] - half)
    window = section[r0 : seed[0] + half + 1, c0 : seed[1] + half + 1]
    yy, xx = np.mgrid[0 : window.shape[0], 0 : window.shape[1]].astype(np.float64)
    dy, dx = yy + r0 - seed[0], xx + c0 - seed[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * aspect
    theta = np.arctan2(v, u)
    wobble = 1.0 + (amps[:, None, None] * np.cos(ks[:, None, None] * theta + phases[:, None, None])).sum(0)
    metric = np.hypot(u, v) / wobble
    blob = np.zeros(window.shape, dtype=bool)
    frontier = np.zeros(window.shape, dtype=bool)
    neighbours = np.zeros((window.shape[0] + 2, window.shape[1] + 2), dtype=np.int64)
    corners = np.zeros((0, 2))
    diameter, pick = 0.0, seed - (r0, c0)
    while True:
        blob[pick[0], pick[1]] = True
        frontier[pick[0], pick[1]] = False
        neighbours[pick[0] : pick[0] + 3, pick[1] : pick[1] + 3] += 1
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            r, c = pick[0] + dr, pick[1] + dc
            if 0 <= r < window.shape[0] and 0 <= c < window.shape[1] and window[r, c] and not blob[r, c]:
                frontier[r, c] = True
        new = _CORNERS + pick
        far = np.sqrt(((new[:, None] - np.concatenate([corners, new])[None]) ** 2).sum(-1)).max()
        diameter, corners = max(diameter, float(far)), np.concatenate([corners, new])
        if diameter >= target and blob.sum() >= min_cells:
            break
        where = np.argwhere(frontier)
        if not len(where):
            raise LayoutError("lesion ran out of tissue before reaching its size")
        m = metric[where[:, 0], where[:, 1]]
        weight = neighbours[where[:, 0] + 1, where[:, 1] + 1] ** 2 * np.exp(-(m - m.min()) / 1.5)
        pick = where[rng.choice(len(where), p=weight / weight.sum())]
    return np.argwhere(blob) + (r0, c0)


def isolated_cells(
    tissue: np.ndarray, count: int, rng: np.random.Generator, min_gap: int = 4, attempts: int = 100
) -> np.ndarray:
    """(count, 2) single tissue cells at least ``min_gap`` cells apart (Chebyshev) and at least two
    cells inside the tissue, so that none touches another (each stays one isolated cell)."""
    depth = ndimage.distance_transform_edt(np.pad(tissue, 1))[1:-1, 1:-1]
    candidates = np.argwhere(tissue & (depth >= 2.0))
    if len(candidates) < count:
        raise LayoutError("not enough tissue for isolated tumour cells")
    for _ in range(attempts):
        picked = candidates[rng.choice(len(candidates), size=count, replace=False)]
        gaps = np.abs(picked[:, None] - picked[None]).max(-1) + np.eye(count, dtype=np.int64) * min_gap
        if (gaps >= min_gap).all():
            return picked
    raise LayoutError("could not place isolated tumour cells apart from each other")
