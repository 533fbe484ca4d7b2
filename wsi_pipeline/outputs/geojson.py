"""``tumor.geojson``: tumour regions as polygons in level-0 px, a FeatureCollection QuPath imports as
annotations. Coordinates are relative to the OpenSlide bounds' origin when the slide has bounds
(QuPath shows such slides cropped to them; see :func:`written_geometry`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import mapping

from wsi_pipeline.aggregation import TumourRegion
from wsi_pipeline.files import JsonDict, JsonValue, json_safe
from wsi_pipeline.result import SlideResult
from wsi_pipeline.tiling import CellGeometry

NAME = "tumor.geojson"
TUMOR_CLASS: JsonDict = {"name": "Tumor", "color": [200, 0, 0]}


def write(folder: Path, result: SlideResult) -> None:
    write_geojson(folder / NAME, tumour_features(result.regions, written_geometry(result)))


def written_geometry(result: SlideResult) -> CellGeometry:
    """Heatmap cell footprints in the coordinates we write: level-0 px minus the slide's
    :attr:`~wsi_pipeline.slide.info.SlideInfo.bounds_offset` (QuPath's origin)."""
    geometry = result.grid.cell_geometry()
    bx, by = result.summary.slide_info.bounds_offset
    return CellGeometry(geometry.origin_x - bx, geometry.origin_y - by, geometry.size)


def cells_to_geometry(cells: np.ndarray, geometry: CellGeometry) -> shapely.Geometry:
    """Union of the footprints of ``cells`` (row, col): a Polygon or MultiPolygon in level-0 px.

    Horizontal runs of cells are merged first, so large regions stay cheap.
    """
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    if len(cells) == 0:
        return shapely.Polygon()
    order = np.lexsort((cells[:, 1], cells[:, 0]))
    rows, cols = cells[order, 0], cells[order, 1]
    breaks = np.flatnonzero((np.diff(rows) != 0) | (np.diff(cols) != 1)) + 1
    starts = np.r_[0, breaks]
    ends = np.r_[breaks, len(rows)] - 1
    xs = geometry.edges(int(cols.max()) + 1, axis=1)
    ys = geometry.edges(int(rows.max()) + 1, axis=0)
    boxes = shapely.box(xs[cols[starts]], ys[rows[starts]], xs[cols[ends] + 1], ys[rows[starts] + 1])
    union = shapely.unary_union(boxes)
    return shapely.simplify(union, 0.0)


def tumour_features(
    regions: Sequence[TumourRegion], geometry: CellGeometry, extra: Sequence[JsonDict] | None = None
) -> JsonDict:
    """GeoJSON FeatureCollection (level-0 px) of tumour regions, importable as QuPath annotations.

    ``regions`` are :class:`~wsi_pipeline.aggregation.TumourRegion` objects (or any with ``cells``,
    ``area_mm2``, ``max_diameter_mm``, ``mean_prob`` and ``max_prob``); the pipeline passes only the
    lesions its decision rule kept, each with its ``confidence`` (:mod:`wsi_pipeline.lesions`).
    """
    features: list[JsonValue] = []
    for i, region in enumerate(regions):
        shape = cells_to_geometry(region.cells, geometry)
        properties: JsonDict = {
            "objectType": "annotation",
            "classification": dict(TUMOR_CLASS),
            "name": f"Tumor region {i + 1}",
            "measurements": {
                "confidence": float(getattr(region, "confidence", region.mean_prob)),
                "area_mm2": float(region.area_mm2),
                "max_diameter_mm": float(region.max_diameter_mm),
                "mean_prob_tumor": float(region.mean_prob),
                "max_prob_tumor": float(region.max_prob),
                "n_cells": int(len(region.cells)),
            },
        }
        if extra is not None:
            properties.update(extra[i])
        features.append({"type": "Feature", "geometry": mapping(shape), "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: Path, collection: JsonDict) -> Path:
    Path(path).write_text(json.dumps(json_safe(collection)) + "\n")
    return Path(path)
