"""Writers for one slide's outputs and the atomic output folder they go into.

``OUT/<stem>/`` holds ``heatmap.zarr``, ``summary.json``, ``tiles.csv``, ``tumor.geojson`` and
``overlay.png``. Everything is written into a hidden ``OUT/.<stem>.tmp-XXXX`` folder that is
renamed to ``OUT/<stem>`` only when complete, so an interrupted run never leaves a folder that
looks finished, and an older complete result is replaced only at the very end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping

from wsi_pipeline.errors import OptionError, OutputError

HEATMAP_NAME = "heatmap.zarr"
SUMMARY_NAME = "summary.json"
TILES_NAME = "tiles.csv"
GEOJSON_NAME = "tumor.geojson"
OVERLAY_NAME = "overlay.png"
OUTPUT_NAMES = (HEATMAP_NAME, SUMMARY_NAME, TILES_NAME, GEOJSON_NAME, OVERLAY_NAME)

#: Name marker of in-progress folders (``.<stem>.tmp-XXXX``); batch clean-up relies on it.
TEMP_MARKER = ".tmp"

TUMOR_CLASS = {"name": "Tumor", "color": [200, 0, 0]}


# --- atomic folder --------------------------------------------------------------------------
def check_unique_stems(slides: Sequence[Path]) -> None:
    """Two slides with the same stem would write the same ``OUT/<stem>`` folder."""
    seen: dict[str, Path] = {}
    for slide in slides:
        other = seen.setdefault(slide.stem, slide)
        if other != slide:
            raise OptionError(f"{slide}: same name as {other}; both would write to OUT/{slide.stem}")


@contextmanager
def atomic_output_dir(out_root: Path, name: str) -> Iterator[Path]:
    """Yield a temporary folder in ``out_root``; on success it becomes ``out_root/name``.

    On any exception the temporary folder is removed and an existing ``out_root/name`` is
    left untouched.
    """
    out_root = Path(out_root)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}{TEMP_MARKER}-", dir=out_root))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; results should look like any folder
    except OSError as exc:
        raise OutputError(f"{out_root}: cannot create output folder: {exc.strerror or exc}") from exc
    try:
        yield tmp
        _replace_dir(tmp, out_root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``; an old ``final`` is moved aside first, then deleted."""
    old: Path | None = None
    try:
        if final.is_symlink() or final.is_file():
            raise OutputError(f"{final}: exists and is not a folder; not replacing it")
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}{TEMP_MARKER}-old-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
    except OSError as exc:
        if old is not None and not final.exists():  # put the previous result back
            os.replace(old / final.name, final)
        raise OutputError(f"{final}: cannot move finished outputs into place: {exc.strerror or exc}") from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --- heatmap ---------------------------------------------------------------------------------
def write_heatmap_zarr(path: Path, heatmap: np.ndarray, attrs: dict[str, Any], chunk: int = 512) -> Path:
    """2-D float32 Zarr (v3) array with NaN fill and JSON attributes."""
    import zarr

    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heatmap.shape}")
    chunks = (max(1, min(chunk, heatmap.shape[0])), max(1, min(chunk, heatmap.shape[1])))
    array = zarr.create_array(
        store=str(path),
        shape=heatmap.shape,
        chunks=chunks,
        dtype="float32",
        fill_value=np.nan,
        zarr_format=3,
        overwrite=True,
    )
    array[...] = heatmap
    array.attrs.update(json_safe(attrs))
    return Path(path)


def read_heatmap_zarr(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The heatmap array and its attributes (for tests, tools and notebooks)."""
    import zarr

    array = zarr.open_array(str(path), mode="r")
    return np.asarray(array[...]), dict(array.attrs)


# --- summary --------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays, paths and non-finite floats into JSON values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` via a temporary file in the same folder, then rename: readers never see half a
    file and an interrupted write leaves the old one. Errors become :class:`OutputError`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file path")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()
    return path


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    Path(path).write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    return Path(path)


# --- tiles ----------------------------------------------------------------------------------
def write_tiles_csv(path: Path, boxes: np.ndarray, probs: np.ndarray) -> Path:
    """wsinfer-style table: ``minx,miny,width,height,prob_tumor`` (level-0 px), one row per tile."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(boxes) != len(probs):
        raise ValueError(f"{len(boxes)} tile boxes but {len(probs)} probabilities")
    with open(path, "w", newline="") as fh:
        fh.write("minx,miny,width,height,prob_tumor\n")
        for (x, y, w, h), p in zip(np.rint(boxes).astype(np.int64).tolist(), probs.tolist(), strict=True):
            fh.write(f"{x},{y},{w},{h},{p:.6f}\n")
    return Path(path)


# --- tumour polygons ------------------------------------------------------------------------
@dataclass(frozen=True)
class CellGeometry:
    """Where heatmap cells lie on the slide (level-0 px): cell ``(r, c)`` covers
    ``[x0 + c*size, x0 + (c+1)*size) x [y0 + r*size, y0 + (r+1)*size)``."""

    origin_x: float
    origin_y: float
    size: float

    def edges(self, n: int, axis: int) -> np.ndarray:
        start = self.origin_x if axis == 1 else self.origin_y
        return start + np.arange(n + 1, dtype=np.float64) * self.size


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
    regions: Sequence[Any], geometry: CellGeometry, extra: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """GeoJSON FeatureCollection (level-0 px) of tumour regions, importable as QuPath annotations.

    ``regions`` are :class:`~wsi_pipeline.aggregation.TumourRegion`-like objects with ``cells``,
    ``area_mm2``, ``max_diameter_mm``, ``mean_prob`` and ``max_prob``.
    """
    features = []
    for i, region in enumerate(regions):
        shape = cells_to_geometry(region.cells, geometry)
        properties: dict[str, Any] = {
            "objectType": "annotation",
            "classification": dict(TUMOR_CLASS),
            "name": f"Tumor region {i + 1}",
            "measurements": {
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


def write_geojson(path: Path, collection: dict[str, Any]) -> Path:
    Path(path).write_text(json.dumps(json_safe(collection)) + "\n")
    return Path(path)


# --- overlay --------------------------------------------------------------------------------
def write_overlay_png(
    path: Path,
    thumbnail: np.ndarray,
    thumb_downsample: float,
    heatmap: np.ndarray,
    geometry: CellGeometry,
    title: str = "",
    alpha: float = 0.55,
) -> Path:
    """Thumbnail with the heatmap (NaN transparent) drawn over it and a colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    thumbnail = np.asarray(thumbnail)
    th, tw = thumbnail.shape[:2]
    rows, cols = heatmap.shape
    left = geometry.origin_x / thumb_downsample
    top = geometry.origin_y / thumb_downsample
    right = (geometry.origin_x + cols * geometry.size) / thumb_downsample
    bottom = (geometry.origin_y + rows * geometry.size) / thumb_downsample
    aspect = th / max(tw, 1)
    longest_in = 9.0  # figure size follows the slide's shape, longest side capped
    width_in, height_in = (
        (longest_in, longest_in * aspect) if aspect <= 1 else (longest_in / aspect, longest_in)
    )
    fig = Figure(figsize=(max(width_in + 1.5, 4.0), max(height_in, 3.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(thumbnail, extent=(0, tw, th, 0), interpolation="antialiased")
    import matplotlib as mpl

    cmap = mpl.colormaps["inferno"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    image = ax.imshow(
        np.ma.masked_invalid(heatmap),
        extent=(left, right, bottom, top),
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        alpha=alpha,
        interpolation="nearest",
    )
    ax.set_xlim(0, tw)
    ax.set_ylim(th, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="tumour probability")
    fig.savefig(str(path), format="png", bbox_inches="tight")
    return Path(path)
