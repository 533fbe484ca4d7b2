"""Block reads of JPEG-tiled TIFF levels, assembled from tiles decoded in batches.

A block read ``(level, x, y, w, h)`` finds the TIFF tiles it touches, takes those already decoded
from a small LRU (neighbouring blocks share edge tiles), reads the raw bytes of the others in file
order through one file descriptor, decodes them in one batch (:mod:`wsi_pipeline.slide.jpeg_tiles`,
or a GPU decoder behind the same interface) and pastes the parts it needs. Outside the level, and
where a tile was never written, is white, as the reader contract says. A tile that is not a
complete JPEG stream, or does not decode, raises :class:`~wsi_pipeline.errors.SlideReadError`.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from wsi_pipeline.errors import SlideReadError
from wsi_pipeline.slide.jpeg_tiles import (
    CpuJpegDecoder,
    JpegLevel,
    TileDecodeError,
    TileDecoder,
    jpeg_level,
    read_tiles,
)
from wsi_pipeline.slide.tifffile_reader import TiffFileReader

DEFAULT_CACHE_BYTES = 64 * 2**20


class JpegBlockReader:
    """Reads blocks of the JPEG levels ``levels`` (level index -> :class:`JpegLevel`) of ``path``.

    ``downsamples[level]`` maps level-0 locations to level pixels in :meth:`read_region`, as the
    slide readers do. The reader owns ``decoder`` (default: libjpeg-turbo, ``CpuJpegDecoder()``).
    Thread-safe.
    """

    def __init__(
        self,
        path: str | Path,
        levels: dict[int, JpegLevel],
        downsamples: list[float],
        decoder: TileDecoder | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.path = Path(path)
        self._levels = dict(levels)
        self._downsamples = list(downsamples)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.decoder: TileDecoder = decoder if decoder is not None else CpuJpegDecoder()
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_bytes)
        self.tiles_decoded = 0  # running count, for tests and benchmarks

    @property
    def levels(self) -> frozenset[int]:
        return frozenset(self._levels)

    def spec(self, level: int) -> JpegLevel:
        """Layout of JPEG level ``level``."""
        return self._levels[level]

    def retain(self, levels: set[int]) -> None:
        """Serve only ``levels`` (of those it has) from now on."""
        self._levels = {level: spec for level, spec in self._levels.items() if level in levels}

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """The reader contract's read: level pixel = level-0 ``location`` / downsample, rounded."""
        ds = self._downsamples[level]
        x = int(math.floor(location[0] / ds + 0.5))
        y = int(math.floor(location[1] / ds + 0.5))
        return self.read_block(level, x, y, int(size[0]), int(size[1]))

    def read_block(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 ``(height, width, 3)`` of ``level`` pixels from ``(x, y)``; white outside."""
        if width <= 0 or height <= 0:
            return np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
        if level not in self._levels:
            raise ValueError(
                f"level {level} is not a JPEG level of {self.path} (have {sorted(self._levels)})"
            )
        lv = self._levels[level]
        ix0, iy0 = max(x, 0), max(y, 0)
        ix1, iy1 = min(x + width, lv.width), min(y + height, lv.height)
        if ix0 >= ix1 or iy0 >= iy1:
            return np.full((height, width, 3), 255, np.uint8)
        out = np.empty((height, width, 3), np.uint8)
        out[: iy0 - y] = 255  # white outside the level: above, below, left, right
        out[iy1 - y :] = 255
        out[iy0 - y : iy1 - y, : ix0 - x] = 255
        out[iy0 - y : iy1 - y, ix1 - x :] = 255
        cols = range(ix0 // lv.tile_w, (ix1 - 1) // lv.tile_w + 1)
        rows = range(iy0 // lv.tile_h, (iy1 - 1) // lv.tile_h + 1)
        indices = [ty * lv.tiles_across + tx for ty in rows for tx in cols]
        tiles = self._tiles(level, lv, indices)
        for index, tile in zip(indices, tiles, strict=True):
            ty, tx = divmod(index, lv.tiles_across)
            sx, sy = tx * lv.tile_w, ty * lv.tile_h
            x0, y0 = max(ix0, sx), max(iy0, sy)
            x1, y1 = min(ix1, sx + lv.tile_w), min(iy1, sy + lv.tile_h)
            target = out[y0 - y : y1 - y, x0 - x : x1 - x]
            if tile is None:
                target[:] = 255
            else:
                target[:] = tile[y0 - sy : y1 - sy, x0 - sx : x1 - sx]
        return out

    def _tiles(self, level: int, lv: JpegLevel, indices: list[int]) -> list[np.ndarray | None]:
        found: dict[int, np.ndarray | None] = {}
        with self._lock:
            for index in indices:
                key = (level, index)
                if key in self._cache:
                    self._cache.move_to_end(key)
                    found[index] = self._cache[key]
        missing = [i for i in indices if i not in found]
        if missing:
            found.update(self._decode(level, lv, missing))
        return [found[i] for i in indices]

    def _decode(self, level: int, lv: JpegLevel, indices: list[int]) -> dict[int, np.ndarray | None]:
        try:
            raw = read_tiles(self._fd, lv, indices)
        except (OSError, EOFError) as exc:
            raise SlideReadError(f"{self.path}: cannot read JPEG tiles of level {level}: {exc}") from exc
        written = [k for k, data in enumerate(raw) if data is not None]
        try:
            decoded = self.decoder.decode(lv, [raw[k] for k in written])  # type: ignore[misc]
        except TileDecodeError as exc:
            raise self._tile_error(level, lv, indices[written[exc.position]], exc.reason) from exc
        result: dict[int, np.ndarray | None] = dict.fromkeys(indices)
        for k, tile in zip(written, decoded, strict=True):
            index = indices[k]
            problem = _shape_problem(tile, lv, index)
            if problem:
                raise self._tile_error(level, lv, index, problem)
            result[index] = tile
        self._remember(level, result)
        return result

    def _remember(self, level: int, tiles: dict[int, np.ndarray | None]) -> None:
        with self._lock:
            self.tiles_decoded += sum(t is not None for t in tiles.values())
            for index, tile in tiles.items():
                key = (level, index)
                if key in self._cache:
                    continue  # another thread decoded it meanwhile
                self._cache[key] = tile
                self._cache_bytes += 0 if tile is None else tile.nbytes
            while self._cache_bytes > self._cache_limit and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= 0 if old is None else old.nbytes

    def _tile_error(self, level: int, lv: JpegLevel, index: int, reason: str) -> SlideReadError:
        ty, tx = divmod(index, lv.tiles_across)
        return SlideReadError(
            f"{self.path}: cannot decode JPEG tile {index} (column {tx}, row {ty}) of level {level}: {reason}"
        )

    def close(self) -> None:
        self.decoder.close()
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _shape_problem(tile: np.ndarray, lv: JpegLevel, index: int) -> str | None:
    """A decoded tile must be RGB uint8, no larger than a tile and cover its part of the level."""
    ty, tx = divmod(index, lv.tiles_across)
    need_h = min(lv.tile_h, lv.height - ty * lv.tile_h)
    need_w = min(lv.tile_w, lv.width - tx * lv.tile_w)
    ok = (
        tile.dtype == np.uint8
        and tile.ndim == 3
        and tile.shape[2] == 3
        and need_h <= tile.shape[0] <= lv.tile_h
        and need_w <= tile.shape[1] <= lv.tile_w
    )
    return (
        None if ok else f"decoded to {tile.shape} {tile.dtype}, expected ({lv.tile_h}, {lv.tile_w}, 3) uint8"
    )


def jpeg_block_reader(
    tiff: TiffFileReader,
    levels: set[int] | None = None,
    decoder: TileDecoder | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> JpegBlockReader | None:
    """A :class:`JpegBlockReader` for those of ``levels`` (default: all) of ``tiff`` whose tiles are
    JPEG (:func:`~wsi_pipeline.slide.jpeg_tiles.jpeg_level`), or None when there are none. It opens
    its own file descriptor (``OSError`` when it cannot): ``tiff`` may be closed afterwards.
    ``decoder`` is closed when unused."""
    found = {}
    for level in range(tiff.level_count):
        if levels is not None and level not in levels:
            continue
        try:
            page = tiff.level_page(level)
            spec = None if page is None else jpeg_level(page)
        except Exception:  # noqa: BLE001 - odd tags or unreadable first tile: leave the level to the readers
            spec = None
        if spec is not None:
            found[level] = spec
    if not found:
        if decoder is not None:
            decoder.close()
        return None
    try:
        return JpegBlockReader(tiff.path, found, tiff.level_downsamples, decoder, cache_bytes)
    except OSError:
        if decoder is not None:
            decoder.close()
        raise
