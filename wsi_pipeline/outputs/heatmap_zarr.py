"""``heatmap.zarr``: the 2-D float32 tumour-probability heatmap (Zarr v3, NaN fill) with its geometry,
slide and model as attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.files import JsonDict, json_safe
from wsi_pipeline.result import SlideResult
from wsi_pipeline.summary import SlideSummary

NAME = "heatmap.zarr"


def write(folder: Path, result: SlideResult) -> None:
    write_heatmap_zarr(folder / NAME, result.heatmap, heatmap_attrs(result.summary))


def heatmap_attrs(summary: SlideSummary) -> JsonDict:
    """The array's attributes: its geometry (from :meth:`~wsi_pipeline.tiling.TileGrid.describe`),
    the slide and the model."""
    grid = summary.grid
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
        "slide": summary.slide,
        "slide_size": list(summary.slide_info.dimensions),
        "mpp": summary.mpp,
        "model_mpp": grid.model_mpp,
        "level": grid.level,
        "model_name": summary.model.name,
        "model_architecture": summary.model.architecture,
        "model_weights_sha256": summary.model.weights_sha256,
        "params_hash": summary.params_hash,
        "wsi_pipeline_version": __version__,
    }


def write_heatmap_zarr(path: Path, heatmap: np.ndarray, attrs: JsonDict, chunk: int = 512) -> Path:
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


def read_heatmap_zarr(path: Path) -> tuple[np.ndarray, JsonDict]:
    """The heatmap array and its attributes (for tests, tools and notebooks)."""
    import zarr

    array = zarr.open_array(str(path), mode="r")
    return np.asarray(array[...]), dict(array.attrs)
