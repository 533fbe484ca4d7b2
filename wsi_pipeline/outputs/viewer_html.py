"""``viewer.html`` + ``viewer_files/`` + ``viewer.dzi``: the offline review page of one slide.

The page (see :mod:`wsi_pipeline.viewer` and docs/review.md) shows the slide as a Deep Zoom JPEG
pyramid at the model's resolution with the heatmap, the lesion outlines and the lesion list. It is
written unless ``InferenceOptions.viewer`` is off (``wsi-infer --no-viewer``); the slide is opened
again for the pyramid. Costs about 28 MB per cm2 of tissue (docs/review.md, "Size cost").
"""

from __future__ import annotations

import math
from pathlib import Path

from wsi_pipeline.aggregation import TumourRegion, categorise
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs.geojson import cells_to_geometry
from wsi_pipeline.result import SlideResult
from wsi_pipeline.slide import open_slide
from wsi_pipeline.slide.fast_blocks import fast_reads
from wsi_pipeline.tiling import CellGeometry
from wsi_pipeline.viewer.data import Lesion, ViewerData, call_text
from wsi_pipeline.viewer.write import DZI_NAME, TILES_NAME, VIEWER_NAME, write_viewer

NAME = VIEWER_NAME
#: What the viewer output puts in the slide folder beside viewer.html.
EXTRA = (TILES_NAME, DZI_NAME)


def enabled(options: InferenceOptions) -> bool:
    return options.viewer


def write(folder: Path, result: SlideResult) -> None:
    # the pyramid's top level reads the level the tiles came from: batched JPEG decoding there
    # (verified identical to the reader's pixels; ~3x less CPU than OpenSlide's own reads)
    with open_slide(result.slide) as reader, fast_reads(reader, {result.grid.level}) as source:
        write_viewer(folder, viewer_data(result), source, pyramid_mpp=result.grid.model_mpp)


def _lesion(region: TumourRegion, index: int, geometry: CellGeometry) -> Lesion:
    shape = cells_to_geometry(region.cells, geometry)
    polygons = list(getattr(shape, "geoms", [shape]))
    outlines = (ring for polygon in polygons for ring in (polygon.exterior, *polygon.interiors))
    rings = tuple(tuple((float(x), float(y)) for x, y in ring.coords) for ring in outlines)
    confidence = getattr(region, "confidence", None)  # the region's own confidence where it has one
    return Lesion(
        rings=rings,
        max_diameter_mm=region.max_diameter_mm,
        area_mm2=region.area_mm2,
        confidence=float(region.mean_prob if confidence is None else confidence),
        category=categorise(region.max_diameter_mm),
        name=f"Tumor region {index + 1}",
    )


def viewer_data(result: SlideResult) -> ViewerData:
    """What the page shows, from the result in memory (level-0 px of the slide as it is read)."""
    summary, geometry = result.summary, result.grid.cell_geometry()
    notes = (
        ("analysed tiles", str(summary.n_tiles_tissue)),
        ("tumour area", f"{summary.tumor_area_mm2:.3f} mm²"),
        ("model", summary.model.name),
    )
    score = summary.slide_score
    call = call_text(summary.category, summary.largest_tumor_region_mm)
    return ViewerData(
        slide_name=summary.slide_name,
        size=summary.slide_info.dimensions,
        mpp=summary.mpp,
        heatmap=result.heatmap,
        heatmap_origin=(geometry.origin_x, geometry.origin_y),
        heatmap_cell_px=geometry.size,
        lesions=tuple(_lesion(region, i, geometry) for i, region in enumerate(result.regions)),
        call=call,
        score=score if math.isfinite(score) else None,
        notes=notes,
    )
