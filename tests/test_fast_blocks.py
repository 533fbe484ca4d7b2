"""Fast block reads: tifffile used only where it returns exactly OpenSlide's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.errors import SlideReadError
from wsi_pipeline.slide import OpenSlideReader, TiffFileReader, open_slide, read_region_at_mpp
from wsi_pipeline.slide.fast_blocks import FastBlockReader, fast_block_reader
from wsi_pipeline.slide.jpeg_blocks import JpegBlockReader
from wsi_pipeline.testing import gradient_image, write_ome_tiff, write_pyramidal_tiff


def _textured(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    image = gradient_image(height, width).astype(np.int16)
    image += rng.integers(-30, 30, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpeg_pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fast") / "pyramid.tif"
    return write_pyramidal_tiff(path, _textured(1200, 1000), mpp=0.5, levels=3, tile=256, compression="jpeg")


def test_only_the_requested_levels_are_probed_and_served(jpeg_pyramid: Path) -> None:
    with open_slide(jpeg_pyramid) as reader:
        fast = fast_block_reader(reader, {1})
        try:
            assert isinstance(fast, FastBlockReader) and fast.fast_levels == {1}
            level2 = reader.read_region((0, 0), 2, (64, 64))
            assert np.array_equal(fast.read_region((0, 0), 2, (64, 64)), level2)
        finally:
            fast.close()


def test_jpeg_pyramid_reads_are_identical_to_openslide(jpeg_pyramid: Path) -> None:
    with open_slide(jpeg_pyramid) as reader:
        assert isinstance(reader, OpenSlideReader)
        fast = fast_block_reader(reader)
        try:
            assert isinstance(fast, FastBlockReader)
            assert fast.fast_levels == {0, 1, 2} and fast.jpeg_levels == {0, 1, 2}
            assert fast.dimensions == reader.dimensions and fast.metadata_mpp == reader.metadata_mpp
            rng = np.random.default_rng(0)
            for _ in range(12):
                level = int(rng.integers(0, 3))
                ds = int(reader.level_downsamples[level])
                # Includes regions hanging over the right/bottom edges and the top-left corner.
                x, y = (int(v) * ds for v in rng.integers(-40, 600 // ds, size=2))
                size = tuple(int(v) for v in rng.integers(50, 700, size=2))
                expected = reader.read_region((x, y), level, size)
                assert np.array_equal(fast.read_region((x, y), level, size), expected)
            # Resampled reads (what the inference engine does) agree too.
            a = read_region_at_mpp(reader, 13, 7, 500, 400, 260, 210)
            b = read_region_at_mpp(fast, 13, 7, 500, 400, 260, 210)
            assert np.array_equal(a, b)
        finally:
            if fast is not reader:
                fast.close()
        # The OpenSlide handle still works after the fast reader is closed.
        assert reader.read_region((0, 0), 0, (8, 8)).shape == (8, 8, 3)


def test_tifffile_readers_of_non_jpeg_slides_are_returned_unchanged(tmp_path: Path) -> None:
    path = write_ome_tiff(tmp_path / "x.ome.tif", _textured(300, 300), mpp=0.5, levels=2)
    with open_slide(path) as reader:
        assert isinstance(reader, TiffFileReader)
        assert fast_block_reader(reader) is reader


def _flip_level_1(real):  # type: ignore[no-untyped-def]
    def off_by_one(self, location, level, size):  # type: ignore[no-untyped-def]
        pixels = real(self, location, level, size)
        if level == 1:
            pixels = pixels.copy()
            pixels[0, 0, 0] ^= 1
        return pixels

    return off_by_one


def test_a_mismatching_jpeg_level_falls_back_to_tifffile_then_openslide(
    jpeg_pyramid: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JpegBlockReader, "read_region", _flip_level_1(JpegBlockReader.read_region))
    with open_slide(jpeg_pyramid) as reader:
        fast = fast_block_reader(reader)
        assert isinstance(fast, FastBlockReader)
        assert fast.jpeg_levels == {0, 2} and fast.tiff_levels == {1} and fast.fast_levels == {0, 1, 2}
        assert np.array_equal(fast.read_region((0, 0), 1, (64, 64)), reader.read_region((0, 0), 1, (64, 64)))
        fast.close()
    monkeypatch.setattr(TiffFileReader, "read_region", _flip_level_1(TiffFileReader.read_region))
    with open_slide(jpeg_pyramid) as reader:
        fast = fast_block_reader(reader)
        assert isinstance(fast, FastBlockReader) and fast.fast_levels == {0, 2}
        assert np.array_equal(fast.read_region((0, 0), 1, (64, 64)), reader.read_region((0, 0), 1, (64, 64)))
        fast.close()


def test_corrupt_tiles_still_raise_slide_read_error(shared_data: Path) -> None:
    path = shared_data / "slides" / "broken" / "corrupt_tiles_cmu1_pyramid.tif"
    with open_slide(path) as reader:
        fast = fast_block_reader(reader)
        try:
            with pytest.raises(SlideReadError):
                read_region_at_mpp(fast, 0, 0, *fast.dimensions, *fast.dimensions)
        finally:
            if fast is not reader:
                fast.close()
