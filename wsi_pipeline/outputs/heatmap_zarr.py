"""``heatmap.zarr``: the tumour-probability heatmap as an OME-Zarr (NGFF 0.4) multiscale image.

Layout (Zarr format 2, which zarr 2 and zarr 3 both read and write; see :mod:`.zarr_store`)::

    heatmap.zarr/          group: "multiscales" (NGFF 0.4) + our attributes (geometry, slide, model)
      0/                   float32 (rows, cols): one cell per stride step, NaN = not analysed
      1/, 2/               2x and 4x coarser: the mean of the analysed cells under each coarse cell

Axes ``y, x`` in micrometres; each level's ``scale`` is its cell side in um and its
``translation`` the centre of cell (0, 0) in um from the slide's origin - level 0 px (0, 0), or
the OpenSlide bounds' origin when the slide declares bounds (what QuPath shows as (0, 0)). So the
heatmap lies on the slide in napari and any NGFF viewer. ``xarray.open_zarr`` (dimension names
``y, x`` / ``y1, x1`` / ``y2, x2``) and ``dask.array.from_zarr(path, component="0")`` open it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.errors import OutputError
from wsi_pipeline.files import JsonDict, JsonValue, json_safe
from wsi_pipeline.outputs.zarr_store import consolidate, create_group, is_group, open_node, write_array
from wsi_pipeline.result import SlideResult
from wsi_pipeline.summary import SlideSummary

NAME = "heatmap.zarr"
NGFF_VERSION = "0.4"
#: Coarser levels written beside the full-resolution one (each 2x coarser than the one before).
COARSER_LEVELS = 2
CHUNK = 512


def write(folder: Path, result: SlideResult) -> None:
    write_heatmap_zarr(folder / NAME, result.heatmap, heatmap_attrs(result.summary))


def heatmap_attrs(summary: SlideSummary) -> JsonDict:
    """Our attributes of the group: the geometry (from :meth:`~wsi_pipeline.tiling.TileGrid.describe`),
    the slide, the model and the parameters; :func:`write_heatmap_zarr` adds the NGFF metadata
    from ``cell_origin_level0``, ``cell_size_level0_px``, ``mpp`` and ``bounds_offset_level0``."""
    grid, info = summary.grid, summary.slide_info
    return {
        "description": "tumour probability per tile; NaN = no tissue (not analysed)",
        "cell_size_um": grid.cell_size_um,
        "cell_size_level0_px": grid.cell_size_level0_px,
        "cell_origin_level0": list(grid.cell_origin_level0),
        "cell_footprint": (
            "cell (r, c) covers the level-0 square [x0 + c*s, x0 + (c+1)*s) x [y0 + r*s, y0 + (r+1)*s) "
            "with (x0, y0) = cell_origin_level0 and s = cell_size_level0_px: a stride-sized square "
            "centred on the tile (the tile itself when stride = tile size)"
        ),
        "tile_size_model_px": grid.tile_size_model_px,
        "tile_size_level0_px": grid.tile_size_level0_px,
        "stride_model_px": grid.stride_model_px,
        "stride_level0_px": grid.stride_level0_px,
        "origin_level0": list(grid.origin_level0),
        "tile_origin": "tile of cell (r, c) has level-0 top-left origin_level0 + (c, r) * stride_level0_px",
        "bounds_offset_level0": list(info.bounds_offset),
        "coordinates": (
            "level-0 px here are the slide's; the NGFF translation (um) and tiles.csv / *.geojson "
            "subtract bounds_offset_level0 (OpenSlide bounds, QuPath's origin)"
        ),
        "slide": summary.slide,
        "slide_size": list(info.dimensions),
        "slide_bounds": None if info.bounds is None else list(info.bounds),
        "mpp": summary.mpp,
        "model_mpp": grid.model_mpp,
        "level": grid.level,
        "model_name": summary.model.name,
        "model_architecture": summary.model.architecture,
        "model_weights_sha256": summary.model.weights_sha256,
        "params": summary.params,
        "params_hash": summary.params_hash,
        "wsi_pipeline_version": __version__,
    }


def downsample_mean(heatmap: np.ndarray) -> np.ndarray:
    """2x coarser heatmap: each cell the mean of the analysed (non-NaN) cells of its 2 x 2 block
    (edge blocks may be partial); NaN where none was analysed."""
    rows, cols = heatmap.shape
    padded = np.full((rows + rows % 2, cols + cols % 2), np.nan, dtype=np.float32)
    padded[:rows, :cols] = heatmap
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        return np.nanmean(blocks, axis=(1, 3)).astype(np.float32)


def multiscales(attrs: Mapping[str, Any], n_levels: int) -> list[JsonValue]:
    """The NGFF 0.4 ``multiscales`` entry of ``n_levels`` levels (2x apart) for our geometry."""
    mpp = float(attrs["mpp"])
    cell = float(attrs["cell_size_level0_px"])
    x0, y0 = (float(v) for v in attrs["cell_origin_level0"])
    bx, by = (float(v) for v in attrs.get("bounds_offset_level0", (0, 0)))
    datasets: list[JsonValue] = []
    for level in range(n_levels):
        side = cell * 2**level  # level-0 px per cell of this level
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [side * mpp, side * mpp]},
                    {
                        "type": "translation",
                        "translation": [(y0 + side / 2 - by) * mpp, (x0 + side / 2 - bx) * mpp],
                    },
                ],
            }
        )
    return [
        {
            "version": NGFF_VERSION,
            "name": "tumor_probability",
            "axes": [
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": datasets,
            "type": "mean of analysed cells (2x2, NaN-aware)",
            "metadata": {
                "description": "tumour probability per cell; NaN = not analysed; translation = cell centre"
            },
        }
    ]


def dimension_names(level: int) -> tuple[str, str]:
    """xarray's names for a level's axes: ``y, x`` at full resolution, ``yN, xN`` at level N."""
    return ("y", "x") if level == 0 else (f"y{level}", f"x{level}")


def write_heatmap_zarr(path: Path, heatmap: np.ndarray, attrs: dict[str, Any], chunk: int = CHUNK) -> Path:
    """OME-Zarr (NGFF 0.4, Zarr format 2) multiscale image of the 2-D ``heatmap``; ``attrs`` (our
    geometry, with ``mpp``, ``cell_size_level0_px`` and ``cell_origin_level0``) go in the group's
    attributes beside ``multiscales``."""
    missing = [key for key in ("mpp", "cell_size_level0_px", "cell_origin_level0") if key not in attrs]
    if missing:
        raise ValueError(f"heatmap attributes lack {', '.join(missing)} (needed for the NGFF scale)")
    level = np.asarray(heatmap, dtype=np.float32)
    if level.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {level.shape}")
    levels = [level]
    for _ in range(COARSER_LEVELS):
        levels.append(downsample_mean(levels[-1]))
    safe = json_safe(attrs)
    group = create_group(path, {**safe, "multiscales": multiscales(safe, len(levels))})
    for index, data in enumerate(levels):
        write_array(group, str(index), data, (chunk, chunk), dimension_names(index), fill_value=np.nan)
    consolidate(path)
    return Path(path)


def read_heatmap_zarr(path: Path, level: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """The heatmap (full resolution, or coarser ``level``) and the group's attributes.

    Also reads the bare-array stores of earlier versions (attributes on the array).
    :class:`~wsi_pipeline.errors.OutputError` when ``path`` is not a readable heatmap store.
    """
    try:
        node: Any = open_node(Path(path))
        if is_group(node):
            attrs = dict(node.attrs)
            array = node[str(level)]
        else:
            attrs, array = dict(node.attrs), node
        return np.asarray(array[...], dtype=np.float32), attrs
    except Exception as exc:  # zarr raises many kinds (missing, wrong format, bad metadata)
        raise OutputError(f"{path}: cannot read the heatmap: {type(exc).__name__}: {exc}") from exc
