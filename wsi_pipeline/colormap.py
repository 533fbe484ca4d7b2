"""The tumour-probability colour map and opacity ramp shared by every picture we draw (overlay.png,
the viewer's heatmap layer)."""

from __future__ import annotations

import numpy as np

#: matplotlib's "inferno" colour map sampled at 33 evenly spaced points (0, 1/32, ..., 1); the
#: overlay interpolates between them. Kept here so writing an overlay needs no matplotlib import
#: (~2 s on a small CPU, more than analysing a small slide).
INFERNO_ANCHORS = np.array(
    [
        (0, 0, 4), (4, 3, 18), (11, 7, 36), (21, 11, 55), (33, 12, 74), (47, 10, 91),
        (61, 9, 101), (74, 12, 107), (87, 16, 110), (100, 21, 110), (113, 25, 110), (125, 30, 109),
        (138, 34, 106), (151, 39, 102), (163, 44, 97), (176, 49, 91), (188, 55, 84), (199, 62, 76),
        (210, 70, 68), (219, 80, 59), (228, 90, 49), (235, 102, 40), (241, 115, 29), (246, 128, 19),
        (249, 142, 9), (251, 157, 7), (252, 172, 17), (251, 188, 33), (249, 203, 53), (245, 219, 76),
        (242, 234, 105), (243, 246, 138), (252, 255, 164),
    ],
    dtype=np.float64,
)  # fmt: skip


def inferno(values: np.ndarray) -> np.ndarray:
    """RGB (float, 0-255) of the inferno colour map at ``values`` in [0, 1] (clipped)."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    grid = np.linspace(0.0, 1.0, len(INFERNO_ANCHORS))
    return np.stack([np.interp(v, grid, INFERNO_ANCHORS[:, k]) for k in range(3)], axis=-1)


#: Heatmap cells below this probability (and NaN cells) are transparent; above it, cells grow
#: from faint (MIN_ALPHA) to opaque at FULL_PROB (the tumour threshold), so that low, doubtful
#: probabilities leave the tissue readable.
DEFAULT_MIN_PROB = 0.2
FULL_PROB = 0.5
MIN_ALPHA = 0.3


def heatmap_alpha(values: np.ndarray, min_prob: float = DEFAULT_MIN_PROB) -> np.ndarray:
    """Opacity (0-1) of cells of probability ``values``: 0 below ``min_prob`` and for NaN."""
    values = np.asarray(values, dtype=np.float64)
    ramp = np.clip((values - min_prob) / max(FULL_PROB - min_prob, 1e-6), 0.0, 1.0)
    alpha = MIN_ALPHA + (1.0 - MIN_ALPHA) * ramp
    return np.where(np.isfinite(values) & (values >= min_prob), alpha, 0.0)


def heatmap_rgba(heatmap: np.ndarray, min_prob: float = DEFAULT_MIN_PROB) -> np.ndarray:
    """(rows, cols, 4) uint8: inferno colours with :func:`heatmap_alpha` opacity."""
    values = np.asarray(heatmap, dtype=np.float32)
    rgba = np.zeros(values.shape + (4,), dtype=np.uint8)
    shown = np.isfinite(values) & (values >= min_prob)
    rgba[shown, :3] = np.clip(np.rint(inferno(values[shown])), 0, 255).astype(np.uint8)
    rgba[..., 3] = np.rint(255 * heatmap_alpha(values, min_prob)).astype(np.uint8)
    return rgba
