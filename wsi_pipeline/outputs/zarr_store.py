"""Zarr stores that zarr 2 (>= 2.16) and zarr 3 both write and read: the Zarr v2 format.

Every store we write is Zarr format 2 (``.zgroup``/``.zarray``/``.zattrs``, Blosc-zstd chunks), which
both library generations read and write, and which xarray, dask, ome-zarr-py, napari and
TIAToolbox (pinned to zarr < 3) open. The two libraries spell array creation differently; this
module is the one place that knows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.files import JsonDict


def zarr_major() -> int:
    """The major version of the installed zarr library (2 or 3)."""
    import zarr

    return int(str(zarr.__version__).split(".")[0])


def _compressor() -> Any:
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)


def create_group(path: Path, attrs: JsonDict) -> Any:
    """A new (overwritten) Zarr v2 group at ``path`` with ``attrs``."""
    import zarr

    if zarr_major() >= 3:
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
    else:
        group = zarr.open_group(str(path), mode="w")
    group.attrs.update(attrs)
    return group


def write_array(
    group: Any,
    name: str,
    data: np.ndarray,
    chunks: Sequence[int],
    dimension_names: Sequence[str],
    fill_value: float | int | None = None,
) -> Any:
    """``data`` as array ``name`` of ``group`` (Zarr v2, Blosc-zstd), with xarray's
    ``_ARRAY_DIMENSIONS`` attribute naming its axes."""
    data = np.asarray(data)
    chunks = tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, data.shape, strict=True))
    if zarr_major() >= 3:
        array = group.create_array(
            name,
            shape=data.shape,
            chunks=chunks,
            dtype=data.dtype,
            fill_value=fill_value,
            compressors=_compressor(),
            overwrite=True,
        )
    else:
        array = group.create_dataset(
            name,
            shape=data.shape,
            chunks=chunks,
            dtype=data.dtype,
            fill_value=fill_value,
            compressor=_compressor(),
            overwrite=True,
        )
    _write_chunkwise(array, data)
    array.attrs["_ARRAY_DIMENSIONS"] = list(dimension_names)
    return array


def _write_chunkwise(array: Any, data: np.ndarray) -> None:
    """``array[...] = data`` one chunk per assignment, so that no chunk write is still in flight when
    one fails. (zarr 3 writes the chunks of one assignment concurrently and raises on the first
    failure while the others go on: on a full disk they kept writing into the temporary folder as it
    was removed, and logged "Future exception was never retrieved" to stderr.)"""
    chunks = [int(c) for c in array.chunks]
    starts = [range(0, int(n), c) for n, c in zip(data.shape, chunks, strict=True)]
    for corner in itertools.product(*starts):
        index = tuple(slice(s, s + c) for s, c in zip(corner, chunks, strict=True))
        array[index] = data[index]


def consolidate(path: Path) -> None:
    """Write ``.zmetadata`` (all metadata in one file): xarray and remote readers open the store
    with one read, and without a warning."""
    import zarr

    zarr.consolidate_metadata(str(path))


def open_node(path: Path) -> Any:
    """The group or array stored at ``path``, read-only (either Zarr format the library reads)."""
    import zarr

    return zarr.open(str(path), mode="r")


def is_group(node: Any) -> bool:
    import zarr

    return isinstance(node, zarr.Group)
