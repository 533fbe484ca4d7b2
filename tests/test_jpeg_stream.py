"""JPEG tile streams: the structure check that turns bad tiles into errors, and standalone streams."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from jpeg_factory import segments, textured, write_jpeg_tiff

from wsi_pipeline.errors import SlideReadError
from wsi_pipeline.slide import OpenSlideReader, TiffFileReader, open_slide, read_region_at_mpp
from wsi_pipeline.slide.fast_blocks import FastBlockReader, fast_block_reader
from wsi_pipeline.slide.jpeg_blocks import jpeg_block_reader
from wsi_pipeline.slide.jpeg_stream import StreamError, check_stream, standalone_stream


def tile_bytes(path: Path, index: int) -> tuple[bytes, bytes | None]:
    page = tifffile.TiffFile(path).pages[0]
    with open(path, "rb") as fh:
        fh.seek(page.dataoffsets[index])
        return fh.read(page.databytecounts[index]), page.jpegtables


def small_stream() -> bytes:
    return bytes(imagecodecs.jpeg8_encode(textured(24, 40), level=90))


def test_real_tiles_and_tables_pass(shared_data: Path) -> None:
    for name in ("cmu1_small_region.svs", "cmu1_small_pyramid.ome.tif", "os1_detail.ome.tif"):
        path = shared_data / "slides" / name
        with TiffFileReader(path) as tiff:
            for level in range(tiff.level_count):
                page = tiff.level_page(level)
                if page.keyframe.jpegtables:
                    check_stream(page.keyframe.jpegtables)
                with open(path, "rb") as fh:
                    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                        fh.seek(offset)
                        check_stream(fh.read(count))


def test_every_truncation_is_caught() -> None:
    stream = small_stream()
    check_stream(stream)
    check_stream(stream + b"\x00" * 7)  # bytes after EOI are ignored, as libjpeg does
    check_stream(stream[:-2] + b"\xff\xff\xd9")  # fill byte before EOI
    for cut in range(len(stream) - 1):
        with pytest.raises(StreamError):
            check_stream(stream[:cut])
        with pytest.raises(StreamError):  # the tail zeroed (a half-written tile)
            check_stream(stream[:cut] + bytes(len(stream) - cut))


def test_stray_and_misordered_markers_are_caught() -> None:
    stream = small_stream()
    parts, rest = segments(stream)
    head = b"\xff\xd8" + b"".join(data for _, data in parts)
    sos_len = int.from_bytes(rest[2:4], "big")
    sos, data = rest[: 2 + sos_len], rest[2 + sos_len :]
    middle = len(data) // 2
    while data[middle - 1] == 0xFF:  # do not split a stuffed FF 00
        middle += 1

    def with_markers(markers: bytes, dri: bool) -> bytes:
        restart = b"\xff\xdd\x00\x04\x00\x01" if dri else b""
        return head + restart + sos + data[:middle] + markers + data[middle:]

    with pytest.raises(StreamError, match="without a restart interval"):
        check_stream(with_markers(b"\xff\xd0", dri=False))
    with pytest.raises(StreamError, match="out of sequence"):
        check_stream(with_markers(b"\xff\xd0\xff\xd2", dri=True))
    check_stream(with_markers(b"\xff\xd0\xff\xd1", dri=True))  # structurally fine
    with pytest.raises(StreamError, match="unexpected marker|expected a marker"):
        check_stream(stream[:2] + b"\xff\xd8" + stream[2:])
    with pytest.raises(StreamError, match="no start-of-image"):
        check_stream(bytes(len(stream)))


@pytest.mark.parametrize("colour", ["ycbcr420", "rgb_bare"])
def test_standalone_streams_decode_like_tables_and_hints(tmp_path: Path, colour: str) -> None:
    path = write_jpeg_tiff(
        tmp_path / "x.tif", textured(300, 260), tile=128, colour=colour, shared_tables=True
    )
    data, tables = tile_bytes(path, 3)
    rgb = colour == "rgb_bare"
    expected = imagecodecs.jpeg8_decode(
        data, tables=tables, colorspace="RGB" if rgb else None, outcolorspace="RGB"
    )
    merged = standalone_stream(data, tables, rgb_coded=rgb)
    check_stream(merged)
    assert np.array_equal(imagecodecs.jpeg8_decode(merged, outcolorspace="RGB"), expected)
    assert standalone_stream(data, None, rgb_coded=False) == data
    with pytest.raises(StreamError):
        standalone_stream(b"\x00" + data, tables, rgb_coded=rgb)


def corrupt(path: Path, index: int, make) -> Path:  # type: ignore[no-untyped-def]
    """Overwrite tile ``index`` in place with ``make(tile_bytes)`` (same length, zero-padded)."""
    data, _ = tile_bytes(path, index)
    bad = make(data)[: len(data)].ljust(len(data), b"\x00")
    page = tifffile.TiffFile(path).pages[0]
    with open(path, "r+b") as fh:
        fh.seek(page.dataoffsets[index])
        fh.write(bad)
    return path


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d[: len(d) // 2], id="second-half-zeroed"),
        pytest.param(lambda d: d[: len(d) // 2] + b"\xff\xd3" + d[len(d) // 2 + 2 :], id="stray-marker"),
        pytest.param(lambda d: b"", id="all-zero"),
    ],
)
def test_corrupt_tiles_raise_like_openslide(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    """libjpeg only warns on these (imagecodecs would return grey-filled pixels); OpenSlide raises, and
    so do we, naming the tile."""
    path = corrupt(write_jpeg_tiff(tmp_path / "x.tif", textured(600, 600), tile=256), 4, damage)
    with OpenSlideReader(path) as reference, pytest.raises(Exception, match="JPEG|jpeg"):
        reference.read_region((256, 256), 0, (256, 256))
    with TiffFileReader(path) as tiff:
        reader = jpeg_block_reader(tiff)
    assert reader is not None
    assert reader.read_block(0, 0, 0, 256, 256).shape == (256, 256, 3)  # good tiles still read
    with pytest.raises(SlideReadError, match=r"tile 4 \(column 1, row 1\) of level 0"):
        reader.read_block(0, 200, 200, 100, 100)
    reader.close()


def test_corrupt_tiles_of_a_real_slide_raise(shared_data: Path) -> None:
    path = shared_data / "slides" / "broken" / "corrupt_tiles_cmu1_pyramid.tif"
    with TiffFileReader(path) as tiff:
        reader = jpeg_block_reader(tiff, {0})
    assert reader is not None
    assert reader.read_block(0, 0, 0, 2220, 1200).shape == (1200, 2220, 3)  # rows 0-4: intact
    with pytest.raises(SlideReadError, match="tile 51 .* level 0: not a JPEG stream"):
        reader.read_block(0, 1536, 1280, 300, 200)  # zeroed tile 51 (column 6, row 5)
    reader.close()
    with open_slide(path) as slide:  # through the engine's reader: the JPEG path is in use, and raises
        fast = fast_block_reader(slide, {0})
        assert isinstance(fast, FastBlockReader) and fast.jpeg_levels == {0}
        with pytest.raises(SlideReadError):
            read_region_at_mpp(fast, 0, 0, *fast.dimensions, *fast.dimensions)
        fast.close()
