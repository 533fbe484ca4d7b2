"""``tiles.geojson``: one QuPath detection per analysed tile, with ``prob_<class>`` measurements.

Imported into QuPath (File > Import objects, or drag and drop) the detections give a measurement
map of the tumour probability (Measure > Show measurement maps > ``prob_tumor``), as wsinfer's
GeoJSON does. Each detection is the tile's heatmap cell (the tile itself at the default stride; a
stride-sized square centred on it at finer strides, so detections never overlap), classified as
the likelier class. Coordinates as ``tumor.geojson`` (level-0 px, from the OpenSlide bounds'
origin when the slide has bounds).

Files larger than :data:`GZIP_ABOVE_BYTES` are written gzipped as ``tiles.geojson.gz`` (QuPath
0.4 and later import those directly).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsi_pipeline.outputs.geojson import written_geometry
from wsi_pipeline.outputs.tiles_csv import class_names, class_probabilities, probability_columns
from wsi_pipeline.result import SlideResult
from wsi_pipeline.tiling import CellGeometry

NAME = "tiles.geojson"
GZIP_NAME = NAME + ".gz"
#: Above this size (10 MiB, about 40,000 tiles) the file is written gzipped (~10x smaller).
GZIP_ABOVE_BYTES = 10 * 2**20
#: QuPath colours (RGB) of the classes: the tumour class red as in tumor.geojson, the other green.
TUMOR_COLOR = [200, 0, 0]
OTHER_COLOR = [0, 150, 0]


def write(folder: Path, result: SlideResult) -> None:
    cells, probs = result.scores.cells, result.scores.probs
    order = np.lexsort((cells[:, 1], cells[:, 0]))  # row-major
    collection = tile_features(
        cells[order],
        probs[order],
        written_geometry(result),
        class_names(result),
        result.summary.tumor_threshold,
    )
    write_tiles_geojson(folder, collection)


def _qupath_name(name: str) -> str:
    return name[:1].upper() + name[1:]


def tile_features(
    cells: np.ndarray,
    probs: np.ndarray,
    geometry: CellGeometry,
    names: Sequence[str],
    threshold: float = 0.5,
) -> dict[str, object]:
    """FeatureCollection of one detection per cell ``(row, col)`` with tumour probability ``probs``,
    classified as the tumour class (``names[1]``) from ``threshold`` on, else as ``names[0]``."""
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    columns = probability_columns(names)
    table = np.round(class_probabilities(probs, len(columns)), 6).tolist()
    classes = [
        {"name": _qupath_name(names[0]), "color": OTHER_COLOR},
        {"name": _qupath_name(names[1]), "color": TUMOR_COLOR},
    ]
    x0 = geometry.origin_x + cells[:, 1] * geometry.size
    y0 = geometry.origin_y + cells[:, 0] * geometry.size
    corners = np.round(np.column_stack([x0, y0, x0 + geometry.size, y0 + geometry.size]), 3).tolist()
    features = []
    for (xa, ya, xb, yb), values, p in zip(corners, table, probs.tolist(), strict=True):
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[xa, ya], [xb, ya], [xb, yb], [xa, yb], [xa, ya]]],
                },
                "properties": {
                    "objectType": "detection",
                    "classification": dict(classes[int(p >= threshold)]),
                    "measurements": dict(zip(columns, values, strict=True)),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_tiles_geojson(folder: Path, collection: dict[str, object]) -> Path:
    """``folder/tiles.geojson``, or ``folder/tiles.geojson.gz`` above :data:`GZIP_ABOVE_BYTES`."""
    data = (json.dumps(collection, separators=(",", ":"), allow_nan=False) + "\n").encode()
    if len(data) > GZIP_ABOVE_BYTES:
        path = Path(folder) / GZIP_NAME
        path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
    else:
        path = Path(folder) / NAME
        path.write_bytes(data)
    return path


def read_tiles_geojson(folder: Path) -> dict[str, object]:
    """The detections of ``folder`` (plain or gzipped file)."""
    plain = Path(folder) / NAME
    if plain.exists():
        return json.loads(plain.read_bytes())
    return json.loads(gzip.decompress((Path(folder) / GZIP_NAME).read_bytes()))
