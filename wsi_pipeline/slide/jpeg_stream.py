"""JPEG byte streams of TIFF tiles: a structure check before decoding, and self-contained streams.

libjpeg only *warns* about a stream that ends early or holds a stray marker and then fills the rest
of the image with grey. OpenSlide turns those warnings into errors; imagecodecs (and so tifffile)
ignores them and returns wrong pixels. :func:`check_stream` finds these cases from the bytes
alone (no end-of-image marker, a marker inside entropy-coded data, restart markers out of order,
segments running past the end), so a bad tile becomes an error instead of silently wrong pixels.
Corruption inside entropy-coded data that keeps the structure intact (flipped bits) is not seen
here; libjpeg reports some of it (a bad Huffman code) only as a warning, which imagecodecs drops.

:func:`standalone_stream` merges a TIFF's shared JPEG tables into a tile and marks RGB-coded data
(Aperio SVS) with an Adobe marker, for decoders that take one complete JPEG per image (nvJPEG).
"""

from __future__ import annotations

import re

SOI, EOI, SOS, DRI = 0xD8, 0xD9, 0xDA, 0xDD
_RST0, _RST7 = 0xD0, 0xD7
_STANDALONE = {0x01, *range(_RST0, _RST7 + 1), SOI, EOI}  # markers without a length field
#: APP14 "Adobe" segment with transform 0: the three components are R, G, B (no YCbCr conversion).
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_MARKER = re.compile(rb"\xff[^\x00\xff]")  # in entropy-coded data: a marker, not stuffing or fill


class StreamError(ValueError):
    """The bytes are not a complete JPEG stream."""


def check_stream(data: bytes | memoryview) -> None:
    """Raise :class:`StreamError` unless ``data`` is a structurally complete JPEG stream.

    Walks the marker segments from SOI to EOI; every entropy-coded segment (after SOS) may hold
    only stuffed ``FF 00`` bytes, fill bytes and restart markers ``RST0..7`` in sequence (and those
    only after a DRI segment). Bytes after EOI are ignored, as libjpeg does.
    """
    buf = memoryview(data).cast("B")
    size = len(buf)
    if size < 4 or buf[0] != 0xFF or buf[1] != SOI:
        raise StreamError("not a JPEG stream (no start-of-image marker)")
    pos, restarts = 2, False
    while True:
        while pos < size and buf[pos] == 0xFF and pos + 1 < size and buf[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 1 >= size:
            raise StreamError("stream ends before its end-of-image marker (truncated)")
        if buf[pos] != 0xFF:
            raise StreamError(f"expected a marker at byte {pos}, found 0x{buf[pos]:02x}")
        marker = buf[pos + 1]
        if marker == EOI:
            return
        if marker in _STANDALONE:
            raise StreamError(f"unexpected marker 0x{marker:02x} at byte {pos}")
        if pos + 3 >= size:
            raise StreamError("stream ends inside a segment header (truncated)")
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        end = pos + 2 + length
        if length < 2 or end > size:
            raise StreamError(f"segment 0x{marker:02x} at byte {pos} runs past the end (truncated)")
        if marker == DRI and length >= 4:
            restarts = ((buf[pos + 4] << 8) | buf[pos + 5]) > 0
        pos = end
        if marker == SOS:
            pos = _entropy_end(buf, pos, restarts)


def _entropy_end(data: memoryview, start: int, restarts: bool) -> int:
    """Index of the marker that ends the entropy-coded segment starting at ``start``."""
    expected = 0
    for found in _MARKER.finditer(data, start):
        marker = data[found.start() + 1]
        if not _RST0 <= marker <= _RST7:
            return found.start()
        if not restarts:
            raise StreamError("restart marker in entropy-coded data without a restart interval")
        if marker - _RST0 != expected:
            raise StreamError("restart markers out of sequence (data lost or inserted)")
        expected = (expected + 1) % 8
    raise StreamError("entropy-coded data runs to the end of the stream (truncated, no EOI)")


def standalone_stream(tile: bytes, tables: bytes | None, rgb_coded: bool) -> bytes:
    """One complete JPEG: ``tables`` (an SOI..EOI stream of DQT/DHT) spliced in after the tile's
    SOI, plus an Adobe RGB marker when the components are RGB-coded without a JFIF/Adobe marker."""
    if tile[:2] != b"\xff\xd8":
        raise StreamError("not a JPEG stream (no start-of-image marker)")
    head = b"\xff\xd8"
    if rgb_coded:
        head += ADOBE_RGB
    if tables:
        if tables[:2] != b"\xff\xd8" or tables[-2:] != b"\xff\xd9":
            raise StreamError("JPEG tables are not an SOI..EOI stream")
        head += tables[2:-2]
    return head + tile[2:]
