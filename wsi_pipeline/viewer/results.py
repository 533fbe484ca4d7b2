"""A ``wsi-infer`` output folder (``OUT/<slide>``) read back as :class:`ViewerData`.

Each file is read by one small function, so a change of layout touches one place:
``summary.json`` (slide path, um/px, call), ``tumor.geojson`` (lesions) and ``heatmap.zarr``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.aggregation import categorise
from wsi_pipeline.errors import OptionError, OutputError, SlideOpenError
from wsi_pipeline.outputs.heatmap_zarr import read_heatmap_zarr
from wsi_pipeline.viewer.data import Lesion, ViewerData
from wsi_pipeline.viewer.data import call_text as slide_call

SUMMARY_NAME = "summary.json"
GEOJSON_NAME = "tumor.geojson"
HEATMAP_NAME = "heatmap.zarr"


def read_summary(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise OptionError(f"{folder}: no such results folder (give OUT/<slide> as written by wsi-infer)")
    path = folder / SUMMARY_NAME
    if not path.is_file():
        raise OptionError(f"{folder}: not a wsi-infer results folder ({SUMMARY_NAME} is missing)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: cannot read it: {exc}") from exc
    if not isinstance(summary, dict):
        raise OutputError(f"{path}: expected a JSON object")
    return summary


def slide_path(summary: dict[str, Any], folder: Path) -> Path:
    """The analysed slide, as recorded in ``summary.json`` (relative paths: from the folder)."""
    recorded = summary.get("slide")
    if not isinstance(recorded, str) or not recorded:
        raise OutputError(f"{Path(folder) / SUMMARY_NAME}: does not say which slide was analysed ('slide')")
    path = Path(recorded).expanduser()
    if not path.is_absolute():
        path = Path(folder) / path
    if not path.is_file():
        raise SlideOpenError(
            f"{path}: slide not found (recorded in {Path(folder) / SUMMARY_NAME}); was it moved or deleted?"
        )
    return path


def read_lesions(path: Path, offset: tuple[float, float] = (0.0, 0.0)) -> tuple[Lesion, ...]:
    """Tumour regions of ``tumor.geojson`` as polygons in level-0 px (the file's coordinates plus
    ``offset``, the OpenSlide bounds' origin they were written relative to) with their measurements."""
    if not Path(path).is_file():
        return ()
    try:
        collection = json.loads(Path(path).read_text(encoding="utf-8"))
        features = collection.get("features", [])
        return tuple(_lesion(feature, i, offset) for i, feature in enumerate(features))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise OutputError(f"{path}: not a readable tumour-region GeoJSON: {exc}") from exc


def _lesion(feature: dict[str, Any], index: int, offset: tuple[float, float]) -> Lesion:
    geometry = feature["geometry"]
    if geometry["type"] == "Polygon":
        rings = list(geometry["coordinates"])
    elif geometry["type"] == "MultiPolygon":
        rings = [ring for polygon in geometry["coordinates"] for ring in polygon]
    else:
        raise ValueError(f"feature {index}: {geometry['type']} is not a polygon")
    dx, dy = offset
    shifted = tuple(tuple((float(x) + dx, float(y) + dy) for x, y, *_ in ring) for ring in rings)
    properties = feature.get("properties") or {}
    measurements = properties.get("measurements") or {}
    diameter = float(measurements.get("max_diameter_mm", math.nan))
    confidence = measurements.get(
        "confidence", measurements.get("mean_prob_tumor", measurements.get("max_prob_tumor", 0.0))
    )
    return Lesion(
        rings=shifted,
        max_diameter_mm=diameter,
        area_mm2=float(measurements.get("area_mm2", math.nan)),
        confidence=min(1.0, max(0.0, float(confidence))),
        category=categorise(diameter),
        name=str(properties.get("name", "")),
    )


def read_heatmap(path: Path) -> tuple[np.ndarray, tuple[float, float], float] | None:
    """(heatmap, level-0 origin of cell (0, 0), cell side in level-0 px), None without a store."""
    if not Path(path).exists():
        return None
    heatmap, attrs = read_heatmap_zarr(path)
    try:
        origin = attrs["cell_origin_level0"]
        return heatmap, (float(origin[0]), float(origin[1])), float(attrs["cell_size_level0_px"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise OutputError(f"{path}: cannot read the heatmap geometry: {exc}") from exc


def bounds_offset(summary: dict[str, Any]) -> tuple[float, float]:
    """Level-0 (x, y) the written coordinates are relative to: the OpenSlide bounds' origin, if any."""
    info = summary.get("slide_info")
    bounds = info.get("bounds") if isinstance(info, dict) else None
    if isinstance(bounds, list) and len(bounds) == 4:
        return float(bounds[0]), float(bounds[1])
    return 0.0, 0.0


def call_text(summary: dict[str, Any]) -> str:
    return slide_call(summary.get("category"), summary.get("largest_tumor_region_mm"))


def load_result_folder(folder: str | Path, size: tuple[int, int], mpp: float | None = None) -> ViewerData:
    """:class:`ViewerData` of ``OUT/<slide>`` for a slide of ``size`` (level-0 px); ``mpp``
    defaults to the um/px recorded in ``summary.json``."""
    folder = Path(folder)
    summary = read_summary(folder)
    mpp = mpp if mpp is not None else summary.get("mpp")
    if not isinstance(mpp, (int, float)) or not mpp > 0:
        raise OutputError(f"{folder / SUMMARY_NAME}: no valid 'mpp' (level-0 um/px)")
    heatmap = read_heatmap(folder / HEATMAP_NAME)
    notes = [("analysed tiles", str(summary["n_tiles_tissue"]))] if "n_tiles_tissue" in summary else []
    if isinstance(summary.get("tumor_area_mm2"), (int, float)):
        notes.append(("tumour area", f"{summary['tumor_area_mm2']:.3f} mm²"))
    model = summary.get("model")
    if isinstance(model, dict) and model.get("name"):
        notes.append(("model", str(model["name"])))
    score = summary.get("slide_score")
    return ViewerData(
        slide_name=str(summary.get("slide_name") or folder.name),
        size=size,
        mpp=float(mpp),
        heatmap=None if heatmap is None else heatmap[0],
        heatmap_origin=(0.0, 0.0) if heatmap is None else heatmap[1],
        heatmap_cell_px=1.0 if heatmap is None else heatmap[2],
        lesions=read_lesions(folder / GEOJSON_NAME, bounds_offset(summary)),
        call=call_text(summary),
        score=float(score) if isinstance(score, (int, float)) and math.isfinite(score) else None,
        notes=tuple(notes),
    )
