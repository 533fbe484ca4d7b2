"""The viewer's layers as page data: the heatmap as an RGBA PNG, the lesions as SVG paths."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from PIL import Image

from wsi_pipeline.colormap import (
    DEFAULT_MIN_PROB,
    FULL_PROB,
    MIN_ALPHA,
    heatmap_alpha,
    heatmap_rgba,
    inferno,
)
from wsi_pipeline.viewer.data import Lesion, ViewerData

__all__ = [
    "DEFAULT_MIN_PROB",
    "FULL_PROB",
    "MIN_ALPHA",
    "heatmap_alpha",
    "heatmap_layer",
    "heatmap_rgba",
    "lesion_entries",
    "svg_path",
]

#: The heatmap PNG is the heatmap upscaled (nearest) by a whole factor, so cells stay crisp when
#: the browser smooths it, within these limits (the blocks compress to little).
MAX_PNG_PIXELS = 4_000_000
MAX_PNG_SIDE = 4096
MAX_UPSCALE = 64


def heatmap_layer(data: ViewerData, min_prob: float = DEFAULT_MIN_PROB) -> dict[str, Any] | None:
    """Page data of the heatmap layer: a PNG data URL and its place in level-0 px."""
    if data.heatmap is None:
        return None
    rows, cols = data.heatmap.shape
    fit = min(MAX_PNG_SIDE // max(rows, cols), math.isqrt(MAX_PNG_PIXELS // (rows * cols)))
    scale = max(1, min(MAX_UPSCALE, fit))
    rgba = heatmap_rgba(data.heatmap, min_prob)
    if scale > 1:
        rgba = rgba.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=9)
    x0, y0 = data.heatmap_origin
    return {
        "url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        "x": x0,
        "y": y0,
        "width": cols * data.heatmap_cell_px,
        "height": rows * data.heatmap_cell_px,
        "minProb": float(min_prob),
        "legend": [_hex(c) for c in inferno(np.linspace(min_prob, 1.0, 9))],
    }


def _hex(rgb: np.ndarray) -> str:
    r, g, b = (int(round(v)) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def svg_path(lesion: Lesion, decimals: int = 1) -> str:
    """SVG path data of all rings (level-0 px); draw with ``fill-rule: evenodd``."""
    parts = []
    for ring in lesion.rings:
        points = " ".join(f"{x:.{decimals}f} {y:.{decimals}f}" for x, y in ring)
        parts.append(f"M{points}Z")
    return "".join(parts)


def lesion_entries(data: ViewerData) -> list[dict[str, Any]]:
    """Page data of the lesion list and outline layer, largest lesion first."""
    order = sorted(range(len(data.lesions)), key=lambda i: -data.lesions[i].max_diameter_mm)
    entries = []
    for rank, index in enumerate(order):
        lesion = data.lesions[index]
        x0, y0, x1, y1 = lesion.bounds
        entries.append(
            {
                "id": rank,
                "name": lesion.name or f"Lesion {rank + 1}",
                "category": lesion.category,
                "maxDiameterMm": _round(lesion.max_diameter_mm),
                "areaMm2": _round(lesion.area_mm2),
                "confidence": _round(lesion.confidence),
                "bounds": [x0, y0, x1, y1],
                "path": svg_path(lesion),
            }
        )
    return entries


def _round(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}") if math.isfinite(value) and value else float(value)
