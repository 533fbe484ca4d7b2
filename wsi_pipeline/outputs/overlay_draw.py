"""Drawing pieces of ``overlay.png``: the heatmap on the thumbnail, outlines, scale bar, colour bar.

All with numpy and Pillow (no matplotlib: importing it takes ~2 s on a small CPU). Positions are
thumbnail pixels; a thumbnail pixel spans ``downsample`` level-0 px.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from wsi_pipeline.colormap import DEFAULT_MIN_PROB, heatmap_rgba, inferno
from wsi_pipeline.tiling import CellGeometry

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Ring = Sequence[tuple[float, float]]

#: Outline colours (RGB): lesions cyan as in the viewer, the analysed tissue a thin dark green.
LESION_COLOR = (0, 229, 255)
ANALYSED_COLOR = (0, 120, 60)


def _dejavu() -> Path | None:
    """matplotlib's DejaVu Sans (it has the micro sign), found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


def font(size: int) -> Font:
    """DejaVu Sans at ``size`` px, else Pillow's built-in scalable font (a fixed bitmap font
    without FreeType)."""
    path = _dejavu()
    try:
        return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def label_point(rings: Sequence[Ring]) -> tuple[float, float]:
    """Where a region's number goes: its top-most outline point (left-most among equals)."""
    return min((p for ring in rings for p in ring), key=lambda p: (p[1], p[0]))


def cell_values(
    shape: tuple[int, int], downsample: float, heatmap: np.ndarray, geometry: CellGeometry
) -> np.ndarray:
    """The heatmap value under each thumbnail pixel's centre (NaN outside the grid), ``shape``."""
    th, tw = shape
    rows, cols = heatmap.shape
    col = np.floor(((np.arange(tw) + 0.5) * downsample - geometry.origin_x) / geometry.size)
    row = np.floor(((np.arange(th) + 0.5) * downsample - geometry.origin_y) / geometry.size)
    col_ok, row_ok = (col >= 0) & (col < cols), (row >= 0) & (row < rows)
    values = np.full((th, tw), np.nan, dtype=np.float32)
    if col_ok.any() and row_ok.any():
        values[np.ix_(row_ok, col_ok)] = heatmap[
            np.ix_(row[row_ok].astype(np.intp), col[col_ok].astype(np.intp))
        ]
    return values


def blend_heatmap(
    thumbnail: np.ndarray, values: np.ndarray, opacity: float, min_prob: float = DEFAULT_MIN_PROB
) -> np.ndarray:
    """The heatmap's colours over the thumbnail: transparent below ``min_prob`` (and NaN), then
    from faint to ``opacity`` at the tumour threshold (:func:`~.colormap.heatmap_alpha`)."""
    out = np.empty((thumbnail.shape[0], thumbnail.shape[1], 3), dtype=np.uint8)
    for r0 in range(0, out.shape[0], _BLEND_ROWS):  # bands: float temporaries of a few MB, not ~300
        rows = slice(r0, r0 + _BLEND_ROWS)
        rgba = heatmap_rgba(values[rows], min_prob).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0 * opacity
        band = (1.0 - alpha) * thumbnail[rows, :, :3].astype(np.float32) + alpha * rgba[..., :3]
        out[rows] = np.clip(np.rint(band), 0, 255)
    return out


#: Thumbnail rows blended at once (a 2,048 px overlay in one go took ~300 MB of float32 arrays).
_BLEND_ROWS = 128


def mask_edge(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` px of its border (the outline of the analysed tissue)."""
    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~inner


def draw_rings(
    draw: ImageDraw.ImageDraw, rings: Iterable[Ring], scale: float, offset: tuple[int, int], width: int
) -> None:
    """Closed outlines of ``rings`` (level-0 px) scaled by ``scale`` and shifted by ``offset``."""
    ox, oy = offset
    for ring in rings:
        points = [(x * scale + ox, y * scale + oy) for x, y in ring]
        if len(points) >= 2:
            draw.line([*points, points[0]], fill=LESION_COLOR, width=width, joint="curve")


def nice_length_um(target_um: float) -> float:
    """The 1, 2 or 5 x 10^k um length nearest below ``target_um`` (a scale bar's length)."""
    if not target_um > 0:
        return 0.0
    power = 10 ** math.floor(math.log10(target_um))
    return max(step * power for step in (1, 2, 5) if step * power <= target_um)


def length_label(um: float) -> str:
    return f"{um / 1000:g} mm" if um >= 1000 else f"{um:g} µm"


def draw_scale_bar(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], um_per_px: float, text_font: Font
) -> None:
    """A scale bar about a fifth of the image wide in the bottom-left corner of ``box``."""
    x0, y0, x1, y1 = box
    length_um = nice_length_um(0.2 * (x1 - x0) * um_per_px)
    if length_um <= 0:
        return
    bar_px = max(1, round(length_um / um_per_px))
    label = length_label(length_um)
    tw, th = _text_size(draw, label, text_font)
    pad, bar_h = 6, max(4, th // 3)
    left, bottom = x0 + pad, y1 - pad
    width = max(bar_px, tw) + 2 * pad
    height = th + bar_h + 3 * pad
    draw.rectangle((left, bottom - height, left + width, bottom), fill=(255, 255, 255))
    draw.rectangle((left + pad, bottom - pad - bar_h, left + pad + bar_px, bottom - pad), fill=(0, 0, 0))
    draw.text((left + pad, bottom - height + pad), label, fill=(0, 0, 0), font=text_font)


def _text_size(draw: ImageDraw.ImageDraw, text: str, text_font: Font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font)
    return int(right - left), int(bottom - top)


def draw_colour_bar(
    canvas: Image.Image, origin: tuple[int, int], size: tuple[int, int], text_font: Font, min_prob: float
) -> None:
    """Vertical inferno bar (1 at the top), ticks every 0.25 and a mark where colour starts (``min_prob``)."""
    (x0, y0), (bar_w, bar_h) = origin, size
    ramp = inferno(np.linspace(1.0, 0.0, bar_h))[:, None, :].repeat(bar_w, axis=1)
    below = np.linspace(1.0, 0.0, bar_h) < min_prob
    ramp[below] = 255.0  # transparent: the slide shows through
    canvas.paste(Image.fromarray(ramp.round().astype(np.uint8)), (x0, y0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x0, y0, x0 + bar_w - 1, y0 + bar_h - 1), outline=(0, 0, 0))
    for tick in sorted({0.0, 0.25, 0.5, 0.75, 1.0, min_prob}):
        y = y0 + round((1.0 - tick) * (bar_h - 1))
        draw.line((x0 + bar_w, y, x0 + bar_w + 4, y), fill=(0, 0, 0))
        _, th = _text_size(draw, "0", text_font)
        draw.text((x0 + bar_w + 8, y - th // 2 - 2), f"{tick:.2f}", fill=(0, 0, 0), font=text_font)
