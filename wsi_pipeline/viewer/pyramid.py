"""A Deep Zoom (DZI) tile pyramid of a slide at one resolution, written in bounded memory.

Level ``max`` is the slide resampled to ``level0_px`` level-0 px per pyramid px; each level below
halves it (2x2 mean, the last odd row/column averaged with itself), down to 1x1 px, as the DZI
format defines. Tiles are ``tile_size`` px plus ``overlap`` px on each inner side (254 + 1, the
usual choice, gives 256 px tiles), named ``<level>/<col>_<row>.<format>``.

The top level is read block by block (``2**block_levels`` tiles a side plus a small margin) and
each block gives the tiles of ``block_levels`` levels by halving; the next level down is kept in
memory (1/``4**block_levels`` of the top level's pixels) and pyramided the same way. Blank
glass tiles (bright and nearly uniform) are not written: they are listed in a bit set per level
and drawn in the viewer with one glass colour (like ``vips dzsave --skip-blanks``); a tile below
the top level is blank when the tiles it is made of are.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_pipeline.slide import SlideReader, read_region_at_mpp

DEFAULT_TILE_SIZE = 254
DEFAULT_OVERLAP = 1
DEFAULT_QUALITY = 80
BLOCK_LEVELS = 3  # top-level blocks of 2,032 px (4,064 px blocks took ~100 MB of temporaries)
#: A tile is blank glass when every channel of every pixel is >= BLANK_MIN and each channel
#: varies by at most BLANK_RANGE across the tile.
BLANK_MIN = 200
BLANK_RANGE = 16

Source = Callable[[int, int, int, int], np.ndarray]  # (x, y, w, h) of a level -> (h, w, 3) uint8


@dataclass(frozen=True)
class Pyramid:
    """A written pyramid: what a viewer needs to address its tiles."""

    tiles_dir: Path
    width: int  # top level, px
    height: int
    level0_px: float  # level-0 px per top-level px
    tile_size: int
    overlap: int
    format: str
    blank: dict[int, bytes]  # level -> row-major bit set (bit i = tile i, LSB first) of unwritten tiles
    glass: tuple[int, int, int]  # colour drawn for blank tiles
    n_tiles: int  # all tiles, written or blank
    n_blank: int
    n_bytes: int  # bytes of the tile files written

    @property
    def max_level(self) -> int:
        return len(level_sizes(self.width, self.height)) - 1


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of DZI levels 0 (1x1 px) .. max (``width x height``)."""
    top = math.ceil(math.log2(max(width, height, 1)))
    return [(math.ceil(width / 2**k), math.ceil(height / 2**k)) for k in range(top, -1, -1)]


def dzi_xml(pyramid: Pyramid) -> str:
    """The ``.dzi`` descriptor (for other Deep Zoom viewers; ``viewer.html`` embeds the same data)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'Format="{pyramid.format}" Overlap="{pyramid.overlap}" TileSize="{pyramid.tile_size}">\n'
        f'  <Size Width="{pyramid.width}" Height="{pyramid.height}"/>\n'
        "</Image>\n"
    )


def halve(pixels: np.ndarray) -> np.ndarray:
    """2x2 mean (rounded); an odd last row/column is averaged with itself."""
    if pixels.shape[0] % 2:
        pixels = np.concatenate([pixels, pixels[-1:]], axis=0)
    if pixels.shape[1] % 2:
        pixels = np.concatenate([pixels, pixels[:, -1:]], axis=1)
    out = pixels[0::2, 0::2].astype(np.uint16)
    out += pixels[1::2, 0::2]
    out += pixels[0::2, 1::2]
    out += pixels[1::2, 1::2]
    out += 2
    out >>= 2
    return out.astype(np.uint8)


def is_blank(tile: np.ndarray) -> bool:
    """Bright, nearly uniform glass (see BLANK_MIN, BLANK_RANGE); ``tile`` is (h, w, 3) uint8."""
    flat = tile.reshape(-1, 3)
    if flat.min() < BLANK_MIN:  # most tissue tiles stop here
        return False
    # one channel at a time: numpy's multi-axis min/max of a small-last-axis array is ~30x slower
    return all(int(flat[:, k].max()) - int(flat[:, k].min()) <= BLANK_RANGE for k in range(3))


class _TileSink:
    """Cuts tiles out of level arrays, writes them and keeps the blank-tile bit sets."""

    def __init__(self, tiles_dir: Path, sizes: list[tuple[int, int]], tile_size: int, overlap: int,
                 fmt: str, quality: int) -> None:  # fmt: skip
        self.tiles_dir, self.sizes, self.ts, self.ov = tiles_dir, sizes, tile_size, overlap
        self.fmt, self.quality = fmt, quality
        self.grid = [(math.ceil(w / tile_size), math.ceil(h / tile_size)) for w, h in sizes]
        self.blank = [bytearray((cols * rows + 7) // 8) for cols, rows in self.grid]
        self.glass: list[np.ndarray] = []
        self.n_tiles = self.n_blank = self.n_bytes = 0
        for level in range(len(sizes)):
            (tiles_dir / str(level)).mkdir(parents=True, exist_ok=True)

    def emit(self, level: int, pixels: np.ndarray, ox: int, oy: int, core: tuple[int, int, int, int]) -> None:
        """Write the tiles of ``level`` whose cores lie in ``core`` (x0, y0, x1, y1; tile-aligned
        starts); ``pixels`` hold level px from (ox, oy) on, core plus ``overlap`` px around it."""
        ts, ov = self.ts, self.ov
        width, height = self.sizes[level]
        for row in range(core[1] // ts, math.ceil(core[3] / ts)):
            y0, y1 = max(row * ts - ov, 0), min((row + 1) * ts + ov, height)
            for col in range(core[0] // ts, math.ceil(core[2] / ts)):
                x0, x1 = max(col * ts - ov, 0), min((col + 1) * ts + ov, width)
                if y0 < oy or x0 < ox or y1 - oy > pixels.shape[0] or x1 - ox > pixels.shape[1]:
                    raise AssertionError(f"level {level} tile {col},{row} not inside its block")
                tile = np.ascontiguousarray(pixels[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
                self.n_tiles += 1
                top = level == len(self.sizes) - 1
                if is_blank(tile) if top else self._children_blank(level, col, row):
                    self._set_blank(level, col, row)
                    if top:
                        self.glass.append(tile.reshape(-1, 3).mean(axis=0))
                    continue
                buffer = io.BytesIO()
                options = {"quality": self.quality} if self.fmt == "jpeg" else {"compress_level": 1}
                Image.fromarray(tile).save(buffer, format=self.fmt.upper(), **options)
                (self.tiles_dir / str(level) / f"{col}_{row}.{self.fmt}").write_bytes(buffer.getvalue())
                self.n_bytes += buffer.tell()

    def _is_set(self, level: int, col: int, row: int) -> bool:
        index = row * self.grid[level][0] + col
        return bool(self.blank[level][index >> 3] >> (index & 7) & 1)

    def _set_blank(self, level: int, col: int, row: int) -> None:
        index = row * self.grid[level][0] + col
        self.blank[level][index >> 3] |= 1 << (index & 7)
        self.n_blank += 1

    def _children_blank(self, level: int, col: int, row: int) -> bool:
        """Below the top level a tile is glass when the (up to 4) tiles it halves are: a few pixels
        averaging a whole slide look uniform and bright too, but are not glass."""
        cols, rows = self.grid[level + 1]
        children = [
            (c, r) for c in (2 * col, 2 * col + 1) for r in (2 * row, 2 * row + 1) if c < cols and r < rows
        ]
        return all(self._is_set(level + 1, c, r) for c, r in children)

    def glass_colour(self) -> tuple[int, int, int]:
        if not self.glass:
            return (255, 255, 255)
        median = np.median(np.stack(self.glass), axis=0)
        return (int(round(median[0])), int(round(median[1])), int(round(median[2])))


def _pyramid_pass(source: Source, width: int, height: int, top: int, sink: _TileSink, k: int) -> None:
    """Write levels ``top`` .. 0 of an image of ``width x height`` px read through ``source``."""
    block = sink.ts << k
    if top < k or (width <= block and height <= block):
        pixels = source(0, 0, width, height)
        for level in range(top, -1, -1):
            sink.emit(level, pixels, 0, 0, (0, 0, pixels.shape[1], pixels.shape[0]))
            if level:
                pixels = halve(pixels)
        return
    # margin: >= overlap px at every block level, and a multiple of 2**k so halving stays aligned
    margin = (1 << k) * max(1, math.ceil(sink.ov / 2))
    lower = np.empty((math.ceil(height / 2**k), math.ceil(width / 2**k), 3), dtype=np.uint8)
    for by in range(0, height, block):
        for bx in range(0, width, block):
            x0, y0 = max(bx - margin, 0), max(by - margin, 0)
            x1, y1 = min(bx + block + margin, width), min(by + block + margin, height)
            pixels = source(x0, y0, x1 - x0, y1 - y0)
            core = (bx, by, min(bx + block, width), min(by + block, height))
            for j in range(k):
                sink.emit(top - j, pixels, x0 >> j, y0 >> j, tuple(math.ceil(v / 2**j) for v in core))
                pixels = halve(pixels)
            cx0, cy0 = bx >> k, by >> k
            cx1, cy1 = math.ceil(core[2] / 2**k), math.ceil(core[3] / 2**k)
            ox, oy = x0 >> k, y0 >> k
            lower[cy0:cy1, cx0:cx1] = pixels[cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox]
    _pyramid_pass(
        lambda x, y, w, h: lower[y : y + h, x : x + w],
        lower.shape[1],
        lower.shape[0],
        top - k,
        sink,
        k,
    )


def write_pyramid(
    reader: SlideReader,
    tiles_dir: Path,
    level0_px: float,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    fmt: str = "jpeg",
    quality: int = DEFAULT_QUALITY,
    block_levels: int = BLOCK_LEVELS,
) -> Pyramid:
    """Write the pyramid of ``reader`` at ``level0_px`` level-0 px per top-level px (>= 1: never
    upsampled) into ``tiles_dir`` (replaced if it exists)."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"tile format must be jpeg or png, got {fmt!r}")
    if tile_size < 16 or overlap < 0 or block_levels < 1:
        raise ValueError(f"bad pyramid layout: tile {tile_size}, overlap {overlap}, blocks {block_levels}")
    level0_px = max(1.0, float(level0_px))
    w0, h0 = reader.dimensions
    width, height = max(1, math.ceil(w0 / level0_px - 1e-6)), max(1, math.ceil(h0 / level0_px - 1e-6))
    sizes = level_sizes(width, height)
    tiles_dir = Path(tiles_dir)
    if tiles_dir.exists():
        shutil.rmtree(tiles_dir)
    sink = _TileSink(tiles_dir, sizes, tile_size, overlap, fmt, quality)

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return read_region_at_mpp(reader, x * level0_px, y * level0_px, w * level0_px, h * level0_px, w, h)

    _pyramid_pass(read, width, height, len(sizes) - 1, sink, block_levels)
    return Pyramid(
        tiles_dir=tiles_dir,
        width=width,
        height=height,
        level0_px=level0_px,
        tile_size=tile_size,
        overlap=overlap,
        format=fmt,
        blank={level: bytes(bits) for level, bits in enumerate(sink.blank)},
        glass=sink.glass_colour(),
        n_tiles=sink.n_tiles,
        n_blank=sink.n_blank,
        n_bytes=sink.n_bytes,
    )
