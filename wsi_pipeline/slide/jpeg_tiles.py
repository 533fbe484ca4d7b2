"""JPEG-tiled TIFF levels: which levels qualify, their raw tile bytes, and batched CPU decoding.

A level qualifies when its tiles are baseline 8-bit JPEG with 3 interleaved samples, photometric
RGB or YCbCr (any chroma subsampling) and no extra samples: that covers Aperio SVS, generic
pyramidal TIFF and OME-TIFF (SubIFD pyramids too). Other codecs (JPEG 2000, LZW, deflate, none)
and layouts return ``None`` and stay with the general readers.

The colour handling is tifffile's: YCbCr data is converted to RGB; photometric RGB without a JFIF
marker (Aperio) is RGB-coded and decoded without conversion.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import imagecodecs
import numpy as np
import tifffile

from wsi_pipeline.slide.jpeg_stream import StreamError, check_stream

_JPEG = 7  # TIFF COMPRESSION.JPEG ("new-style"; 6 = old-style OJPEG is left to the readers)
_RGB, _YCBCR = 2, 6


@dataclass(frozen=True, eq=False)
class JpegLevel:
    """Where the JPEG tiles of one TIFF level lie in the file, and how to decode them."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    offsets: np.ndarray  # int64, one per tile, row-major
    counts: np.ndarray  # int64 byte counts; 0 = tile never written (white)
    tables: bytes | None  # the TIFF JPEGTables stream shared by all tiles, if any
    rgb_coded: bool  # components are R, G, B (no YCbCr -> RGB conversion)

    @property
    def tiles_across(self) -> int:
        return math.ceil(self.width / self.tile_w)

    @property
    def tiles_down(self) -> int:
        return math.ceil(self.height / self.tile_h)


def jpeg_level(page: tifffile.TiffPage | tifffile.TiffFrame) -> JpegLevel | None:
    """The :class:`JpegLevel` of ``page`` (a level's only page), or None when it does not qualify."""
    key = page.keyframe
    if key is None:  # a TiffFrame not linked to its keyframe: nothing to read its layout from
        return None
    ok = (
        key.is_tiled
        and key.compression == _JPEG
        and key.photometric in (_RGB, _YCBCR)
        and key.samplesperpixel == 3
        and key.bitspersample == 8
        and key.planarconfig == 1
        and not key.extrasamples
        and key.imagedepth == 1
        and key.tiledepth == 1
    )
    if not ok:
        return None
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    width, height = int(key.imagewidth), int(key.imagelength)
    tile_w, tile_h = int(key.tilewidth), int(key.tilelength)
    if offsets.size != math.ceil(width / tile_w) * math.ceil(height / tile_h) or counts.size != offsets.size:
        return None
    tables = bytes(key.jpegtables) if key.jpegtables else None
    if tables is not None:
        try:
            check_stream(tables)
        except StreamError:
            return None
    rgb_coded = key.photometric == _RGB and not key.is_jfif
    return JpegLevel(width, height, tile_w, tile_h, offsets, counts, tables, rgb_coded)


def read_tiles(fd: int, level: JpegLevel, indices: Sequence[int]) -> list[memoryview | None]:
    """Raw bytes (memoryviews into the run read) of tiles ``indices`` of ``level`` (None for
    unwritten tiles), read with ``os.pread`` in file order, one read per run of tiles stored back
    to back. Raises ``EOFError`` when the file ends before a tile does."""
    out: list[memoryview | None] = [None] * len(indices)
    wanted = [(int(level.offsets[i]), int(level.counts[i]), pos) for pos, i in enumerate(indices)]
    wanted = sorted(w for w in wanted if w[1] > 0 and w[0] > 0)
    run: list[tuple[int, int, int]] = []
    for item in wanted + [(-1, 0, -1)]:
        if run and item[0] != run[-1][0] + run[-1][1]:
            start = run[0][0]
            size = run[-1][0] + run[-1][1] - start
            data = os.pread(fd, size, start)
            if len(data) < size:
                raise EOFError(
                    f"file ends at byte {start + len(data)}, inside tile data to byte {start + size}"
                )
            view = memoryview(data)
            for offset, count, pos in run:
                out[pos] = view[offset - start : offset - start + count]
            run = []
        run.append(item)
    return out


class TileDecodeError(Exception):
    """Tile ``position`` (in the batch given to the decoder) could not be decoded: ``reason``."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason


class TileDecoder(Protocol):
    """Decodes a batch of JPEG tiles of one level to ``(tile_h, tile_w, 3)`` uint8 RGB arrays."""

    name: str
    #: Largest per-pixel difference from libjpeg-turbo's (= OpenSlide's) pixels accepted by the probe.
    tolerance: int

    def decode(self, level: JpegLevel, tiles: Sequence[bytes | memoryview]) -> list[np.ndarray]:
        """Raise :class:`TileDecodeError` for the first tile that is not a complete, decodable JPEG."""
        ...

    def close(self) -> None: ...


class CpuJpegDecoder:
    """libjpeg-turbo (imagecodecs) with ``threads`` decoding at once (default: the CPU count, at
    most 8); the calling thread takes a share, so ``threads=1`` decodes inline. Bit-identical to
    OpenSlide (the same libjpeg-turbo settings: ISLOW IDCT, fancy upsampling)."""

    name = "libjpeg-turbo"
    tolerance = 0

    def __init__(self, threads: int | None = None) -> None:
        self.threads = max(1, int(threads if threads is not None else min(8, os.cpu_count() or 1)))
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None

    def decode(self, level: JpegLevel, tiles: Sequence[bytes | memoryview]) -> list[np.ndarray]:
        n = min(self.threads, len(tiles))
        if self._pool is None or n < 2:
            return self._decode_share(level, tiles, 0, 1)
        futures = [self._pool.submit(self._decode_share, level, tiles, k, n) for k in range(1, n)]
        shares = [self._decode_share(level, tiles, 0, n)] + [f.result() for f in futures]
        return [shares[i % n][i // n] for i in range(len(tiles))]  # share k holds k, k + n, ...

    def _decode_share(
        self, level: JpegLevel, tiles: Sequence[bytes | memoryview], first: int, step: int
    ) -> list[np.ndarray]:
        colorspace = "RGB" if level.rgb_coded else None
        out: list[np.ndarray] = []
        for position in range(first, len(tiles), step):
            data = tiles[position]
            try:
                check_stream(data)
                tile = imagecodecs.jpeg8_decode(  # its stubs omit memoryview, which it reads zero-copy
                    data,  # type: ignore[arg-type]
                    tables=level.tables,
                    colorspace=colorspace,
                    outcolorspace="RGB",
                )
            except Exception as exc:  # StreamError, imagecodecs.Jpeg8Error, ...
                raise TileDecodeError(position, str(exc) or type(exc).__name__) from exc
            out.append(tile)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
