"""``overlay.png``: a review picture of the slide: the thumbnail (longest side up to
:data:`OVERLAY_MAX_SIDE` px) with the heatmap over it, transparent below a low probability so normal
H&E shows, the lesions kept by the decision rule outlined and numbered, a thin outline around the
tissue that was analysed, a scale bar, a title with the slide-level call (and the first warning, if
any) and a colour bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wsi_pipeline.colormap import DEFAULT_MIN_PROB
from wsi_pipeline.errors import OutputError
from wsi_pipeline.outputs.geojson import cells_to_geometry
from wsi_pipeline.outputs.overlay_draw import (
    ANALYSED_COLOR,
    LESION_COLOR,
    Font,
    blend_heatmap,
    cell_values,
    draw_colour_bar,
    draw_rings,
    draw_scale_bar,
    font,
    label_point,
    mask_edge,
)
from wsi_pipeline.result import SlideResult
from wsi_pipeline.tiling import CellGeometry

NAME = "overlay.png"
#: Longest side of the thumbnail the overlay is drawn on (slide px; never above the slide's size):
#: ~10 um/px on a 20 mm section, so a 0.5 mm lesion spans ~50 px.
OVERLAY_MAX_SIDE = 2048
#: Opacity of the heatmap where the probability reaches the tumour threshold.
HEATMAP_OPACITY = 0.7

Ring = Sequence[tuple[float, float]]


def thumbnail_size(dimensions: tuple[int, int]) -> int:
    """``max_size`` for the slide's thumbnail: :data:`OVERLAY_MAX_SIDE`, or the slide if smaller."""
    return max(1, min(OVERLAY_MAX_SIDE, max(dimensions)))


def region_rings(result: SlideResult) -> list[list[Ring]]:
    """Per tumour region of the aggregate, its outline rings (exteriors and holes) in level-0 px."""
    geometry = result.grid.cell_geometry()
    out: list[list[Ring]] = []
    for region in result.regions:
        shape = cells_to_geometry(region.cells, geometry)
        polygons = list(getattr(shape, "geoms", [shape]))
        rings = (ring for polygon in polygons for ring in (polygon.exterior, *polygon.interiors))
        out.append([[(float(x), float(y)) for x, y in ring.coords] for ring in rings])
    return out


def write(folder: Path, result: SlideResult) -> None:
    thumb, summary = result.thumbnail, result.summary
    width, height = summary.slide_info.dimensions
    thumb_downsample = (width / thumb.shape[1] + height / thumb.shape[0]) / 2.0
    call = summary.diagnosis()["call"]
    title = f"{summary.slide_name}: {call}, slide score {summary.slide_score:.3f}"
    if summary.warnings:  # e.g. out of domain: the call is shown with its caveat
        title += f" (warning: {summary.warnings[0].split(' (')[0]})"
    write_overlay_png(
        folder / NAME,
        thumb,
        thumb_downsample,
        result.heatmap,
        result.grid.cell_geometry(),
        title=title,
        regions=region_rings(result),
        mpp=summary.mpp,
    )


def write_overlay_png(
    path: Path,
    thumbnail: np.ndarray,
    thumb_downsample: float,
    heatmap: np.ndarray,
    geometry: CellGeometry,
    title: str = "",
    regions: Sequence[Sequence[Ring]] = (),
    mpp: float | None = None,
    opacity: float = HEATMAP_OPACITY,
    min_prob: float = DEFAULT_MIN_PROB,
) -> Path:
    """The overlay of ``heatmap`` (cells in ``geometry``, level-0 px) on ``thumbnail`` (one pixel =
    ``thumb_downsample`` level-0 px): ``regions`` (rings in level-0 px) outlined and numbered, the
    analysed cells (non-NaN) outlined, a scale bar when ``mpp`` is known, ``title`` and a colour bar."""
    thumbnail = np.asarray(thumbnail)
    if thumbnail.ndim != 3 or thumbnail.shape[2] < 3:
        raise OutputError(f"overlay thumbnail must be (H, W, 3) RGB, got shape {thumbnail.shape}")
    th, tw = thumbnail.shape[:2]
    values = cell_values((th, tw), thumb_downsample, np.asarray(heatmap), geometry)
    picture = blend_heatmap(thumbnail[..., :3], values, opacity, min_prob)
    picture[mask_edge(np.isfinite(values), width=max(1, round(max(th, tw) / 1500)))] = ANALYSED_COLOR

    side = max(th, tw)
    title_font, text_font = font(max(16, min(40, side // 45))), font(max(12, min(26, side // 70)))
    margin = max(8, side // 100)
    title_h = (title_font.size if hasattr(title_font, "size") else 12) + margin if title else 0
    legend_h = int(getattr(text_font, "size", 11)) + margin
    bar_w, label_w = max(14, side // 80), int(getattr(text_font, "size", 11)) * 4
    canvas_w = tw + 3 * margin + bar_w + label_w
    canvas = Image.new("RGB", (canvas_w, max(th, 120) + title_h + legend_h + 2 * margin), "white")
    image_origin = (margin, margin + title_h)
    canvas.paste(Image.fromarray(picture), image_origin)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((margin, margin // 2), title, fill=(0, 0, 0), font=title_font)
    line_w = max(2, round(side / 700))
    for number, rings in enumerate(regions, start=1):
        draw_rings(draw, rings, 1.0 / thumb_downsample, image_origin, line_w)
        x, y = label_point(rings)
        label_at = (image_origin[0] + x / thumb_downsample, image_origin[1] + y / thumb_downsample - line_w)
        draw.text(
            label_at,
            str(number),
            fill=LESION_COLOR,
            font=text_font,
            anchor="lb",
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )
    if mpp:
        box = (image_origin[0], image_origin[1], image_origin[0] + tw, image_origin[1] + th)
        draw_scale_bar(draw, box, thumb_downsample * mpp, text_font)
    bar_h = max(th - 2 * margin, 60)
    draw_colour_bar(canvas, (tw + 2 * margin, image_origin[1]), (bar_w, bar_h), text_font, min_prob)
    _legend(draw, (margin, image_origin[1] + max(th, 120) + margin // 2), text_font, len(regions), min_prob)
    canvas.save(str(path), format="PNG", compress_level=6)
    return Path(path)


def _legend(
    draw: ImageDraw.ImageDraw, at: tuple[int, int], text_font: Font, n_regions: int, min_prob: float
) -> None:
    x, y = at
    size = int(getattr(text_font, "size", 11))
    entries = [
        (LESION_COLOR, f"lesions ({n_regions})"),
        (ANALYSED_COLOR, "analysed tissue"),
        (None, f"tumour probability colours from {min_prob:g} (transparent below)"),
    ]
    for colour, text in entries:
        if colour is not None:
            draw.line((x, y + size // 2, x + 2 * size, y + size // 2), fill=colour, width=max(2, size // 6))
            x += 2 * size + size // 3
        draw.text((x, y), text, fill=(0, 0, 0), font=text_font)
        x += int(draw.textlength(text, font=text_font)) + 2 * size
