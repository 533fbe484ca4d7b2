"""Single-level JPEG-tiled TIFFs with every tile encoded here (libjpeg-turbo via imagecodecs).

``write_jpeg_tiff(path, rgb, tile, colour, shared_tables)``:

* ``colour="ycbcr420"`` / ``"ycbcr444"``: YCbCr-coded tiles (photometric YCBCR, subsampling tag set);
* ``"rgb"``: RGB-coded tiles with libjpeg's Adobe marker (photometric RGB);
* ``"rgb_bare"``: RGB-coded tiles with neither JFIF nor Adobe marker and component ids 0, 1, 2, as
  Aperio writes them: only the TIFF's photometric RGB says they are not YCbCr.

``shared_tables=True`` moves the quantisation and Huffman tables of every tile into one TIFF
JPEGTables stream (abbreviated tiles, as libtiff writes). Edge tiles are padded by repeating the
last row/column, so partial tiles hold real pixels beyond the image, as scanners' do.
"""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

_TABLE_MARKERS = {0xDB, 0xC4}  # DQT, DHT
_DROP_MARKERS = {"rgb_bare": {0xE0, 0xEE}}  # JFIF APP0, Adobe APP14


def segments(stream: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Marker segments between SOI and SOS as ``(marker, bytes)``, and the rest from SOS on."""
    pos, found = 2, []
    while stream[pos + 1] != 0xDA:
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        found.append((stream[pos + 1], stream[pos : pos + 2 + length]))
        pos += 2 + length
    return found, stream[pos:]


def _encode(tile: np.ndarray, colour: str, quality: int) -> bytes:
    if colour in ("rgb", "rgb_bare"):
        stream = imagecodecs.jpeg8_encode(tile, level=quality, colorspace="RGB", outcolorspace="RGB")
    else:
        subsampling = "420" if colour == "ycbcr420" else "444"
        stream = imagecodecs.jpeg8_encode(tile, level=quality, outcolorspace="YCBCR", subsampling=subsampling)
    stream = bytes(stream)
    if colour != "rgb_bare":
        return stream
    parts, rest = segments(stream)
    kept = []
    for marker, data in parts:
        if marker in _DROP_MARKERS["rgb_bare"]:
            continue
        if marker == 0xC0:  # SOF0: component ids 'R', 'G', 'B' -> 0, 1, 2
            data = bytearray(data)
            for k in range(3):
                data[10 + 3 * k] = k
            data = bytes(data)
        kept.append(data)
    rest = bytearray(rest)  # SOS names the components too
    for k in range(3):
        rest[5 + 2 * k] = k
    return b"\xff\xd8" + b"".join(kept) + bytes(rest)


def _tiles(rgb: np.ndarray, tile: int) -> list[np.ndarray]:
    height, width = rgb.shape[:2]
    ny, nx = -(-height // tile), -(-width // tile)
    padded = np.pad(rgb, ((0, ny * tile - height), (0, nx * tile - width), (0, 0)), mode="edge")
    return [
        padded[y : y + tile, x : x + tile]
        for y in range(0, ny * tile, tile)
        for x in range(0, nx * tile, tile)
    ]


def write_jpeg_tiff(
    path: str | Path,
    rgb: np.ndarray,
    tile: int = 256,
    colour: str = "ycbcr420",
    shared_tables: bool = False,
    quality: int = 90,
) -> Path:
    """Write ``rgb`` (h, w, 3 uint8) as one tiled JPEG page; see the module docstring."""
    path = Path(path)
    streams = [_encode(t, colour, quality) for t in _tiles(rgb, tile)]
    extratags = []
    if shared_tables:
        tables = None
        abbreviated = []
        for stream in streams:
            parts, rest = segments(stream)
            mine = b"".join(data for marker, data in parts if marker in _TABLE_MARKERS)
            if tables is None:
                tables = mine
            assert mine == tables, "tiles do not share their tables"
            abbreviated.append(b"\xff\xd8" + b"".join(d for m, d in parts if m not in _TABLE_MARKERS) + rest)
        streams = abbreviated
        jpegtables = b"\xff\xd8" + tables + b"\xff\xd9"
        extratags.append((347, 7, len(jpegtables), jpegtables, True))
    ycbcr = colour.startswith("ycbcr")
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            iter(streams),
            shape=rgb.shape,
            dtype=np.uint8,
            tile=(tile, tile),
            compression="jpeg",
            photometric="ycbcr" if ycbcr else "rgb",
            subsampling=((2, 2) if colour == "ycbcr420" else (1, 1)) if ycbcr else None,
            compressionargs=None if ycbcr else {"outcolorspace": "rgb"},
            extratags=extratags,
            metadata=None,
        )
    return path


def textured(height: int, width: int, seed: int = 1) -> np.ndarray:
    """Smooth colour ramps plus noise: every tile differs and chroma varies (tests subsampling)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            255 * xx / max(width - 1, 1),
            255 * yy / max(height - 1, 1),
            128 + 100 * np.sin(xx / 23) * np.cos(yy / 31),
        ],
        axis=-1,
    )
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
