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
        tmp.chmod(0o777 & ~process_umask())  # mkdtemp makes 0700; results should look like any folder
    except OSError as exc:
        raise OutputError(f"{out_root}: cannot create output folder: {exc.strerror or exc}") from exc
    try:
        yield tmp
        _replace_dir(tmp, out_root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def process_umask() -> int:
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


def _heatmap_on_thumbnail(
    thumbnail: np.ndarray, thumb_downsample: float, heatmap: np.ndarray, geometry: CellGeometry, alpha: float
) -> np.ndarray:
    """Blend the heatmap's colours over the thumbnail, pixel by pixel (NaN cells leave it as is)."""
    th, tw = thumbnail.shape[:2]
    rows, cols = heatmap.shape
    # Each thumbnail pixel takes the cell under its centre (in level-0 px).
    col = np.floor(((np.arange(tw) + 0.5) * thumb_downsample - geometry.origin_x) / geometry.size)
    row = np.floor(((np.arange(th) + 0.5) * thumb_downsample - geometry.origin_y) / geometry.size)
    col_ok, row_ok = (col >= 0) & (col < cols), (row >= 0) & (row < rows)
    values = np.full((th, tw), np.nan)
    if col_ok.any() and row_ok.any():
        cell_rows, cell_cols = row[row_ok].astype(np.int64), col[col_ok].astype(np.int64)
        values[np.ix_(row_ok, col_ok)] = heatmap[np.ix_(cell_rows, cell_cols)]
    shown = ~np.isnan(values)
    lut = (alpha * inferno(np.linspace(0.0, 1.0, 256))).astype(np.float32)
    levels = np.rint(np.clip(values[shown], 0.0, 1.0) * 255).astype(np.intp)
    out = thumbnail.copy()
    blend = (1.0 - alpha) * thumbnail[shown].astype(np.float32) + lut[levels]
    out[shown] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out


def write_overlay_png(
    path: Path,
    thumbnail: np.ndarray,
    thumb_downsample: float,
    heatmap: np.ndarray,
    geometry: CellGeometry,
    title: str = "",
    alpha: float = 0.55,
) -> Path:
    """Thumbnail with the heatmap (NaN transparent) blended over it, a title and a colour bar.

    Drawn with numpy and Pillow at the thumbnail's own resolution (one thumbnail pixel per image
    pixel), which is ~30x faster than a matplotlib figure and needs no plotting import.
    """
    from PIL import Image, ImageDraw, ImageFont

    thumbnail = np.asarray(thumbnail)
    if thumbnail.ndim != 3 or thumbnail.shape[2] < 3:
        raise OutputError(f"overlay thumbnail must be (H, W, 3) RGB, got shape {thumbnail.shape}")
    blended = _heatmap_on_thumbnail(
        thumbnail[..., :3], thumb_downsample, np.asarray(heatmap), geometry, alpha
    )
    th, tw = blended.shape[:2]
    font = ImageFont.load_default()
    margin, title_h, bar_w, label_w = 8, (18 if title else 0), 14, 64
    bar_h = max(th - 2 * margin, 40)
    canvas = Image.new(
        "RGB", (tw + 2 * margin + bar_w + label_w, max(th, bar_h + 2 * margin) + title_h + margin), "white"
    )
    canvas.paste(Image.fromarray(blended), (margin, margin + title_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((margin, margin // 2), title, fill="black", font=font)
    # Colour bar: 1.0 at the top, 0.0 at the bottom, ticks every 0.25.
    x0, y0 = tw + 2 * margin, margin + title_h
    ramp = inferno(np.linspace(1.0, 0.0, bar_h))[:, None, :].repeat(bar_w, axis=1)
    canvas.paste(Image.fromarray(ramp.round().astype(np.uint8)), (x0, y0))
    draw.rectangle((x0, y0, x0 + bar_w - 1, y0 + bar_h - 1), outline="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y0 + round((1.0 - tick) * (bar_h - 1))
        draw.line((x0 + bar_w, y, x0 + bar_w + 3, y), fill="black")
        draw.text((x0 + bar_w + 6, y - 5), f"{tick:.2f}", fill="black", font=font)
    label = Image.new("RGB", (bar_h, 14), "white")
    ImageDraw.Draw(label).text((bar_h // 2, 7), "tumour probability", fill="black", font=font, anchor="mm")
    canvas.paste(label.rotate(90, expand=True), (x0 + bar_w + 44, y0))
    canvas.save(str(path), format="PNG", compress_level=1)
    return Path(path)
