"""Batched JPEG tile decoding: pixels equal to OpenSlide's (or tifffile's) on real and written slides."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from jpeg_factory import textured, write_jpeg_tiff

from wsi_pipeline.slide import OpenSlideReader, TiffFileReader, open_slide, read_region_at_mpp
from wsi_pipeline.slide.fast_blocks import FastBlockReader, fast_block_reader
from wsi_pipeline.slide.jpeg_blocks import JpegBlockReader, jpeg_block_reader
from wsi_pipeline.slide.jpeg_gpu import tile_decoder
from wsi_pipeline.slide.jpeg_tiles import CpuJpegDecoder, jpeg_level
from wsi_pipeline.testing import write_pyramidal_tiff

MARGIN = 300  # reads reach this far outside a level


def batched(path: Path, threads: int = 2, cache_bytes: int = 64 * 2**20) -> JpegBlockReader:
    with TiffFileReader(path) as tiff:
        reader = jpeg_block_reader(tiff, decoder=CpuJpegDecoder(threads), cache_bytes=cache_bytes)
    assert reader is not None, f"{path.name}: no JPEG level"
    return reader


def crop(level_pixels: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """``(x, y, w, h)`` of a whole level (level pixels), white outside it."""
    height, width = level_pixels.shape[:2]
    out = np.full((h, w, 3), 255, np.uint8)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 < x1 and y0 < y1:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = level_pixels[y0:y1, x0:x1]
    return out


def blocks(
    width: int, height: int, tile: int, count: int = 25, seed: int = 0
) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) blocks: random ones (many straddle tile boundaries and the edges) and edge cases."""
    rng = np.random.default_rng(seed)
    out = [
        (tile - 7, tile - 5, 2 * tile + 13, tile + 11),  # straddles two tile boundaries each way
        (width - 50, height - 40, 120, 100),  # over the bottom-right corner
        (-30, -20, 90, 70),  # over the top-left corner
        (width + 10, 5, 40, 40),  # wholly outside: white
        (width - 1, height - 1, 1, 1),  # the last pixel
        (0, 0, tile, tile),  # exactly one tile
    ]
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(1, 600, size=2))
        x = int(rng.integers(-MARGIN, width - 1))
        y = int(rng.integers(-MARGIN, height - 1))
        out.append((x, y, w, h))
    return out


def assert_matches(reader: JpegBlockReader, reference, level: int, tile: int) -> None:  # type: ignore[no-untyped-def]
    """Whole level (from (0, 0): exact for any downsample) and many blocks equal the reference's."""
    width, height = reference.level_dimensions[level]
    full = reference.read_region((0, 0), level, (width, height))
    got = reader.read_block(level, -MARGIN, -MARGIN, width + 2 * MARGIN, height + 2 * MARGIN)
    expected = crop(full, -MARGIN, -MARGIN, width + 2 * MARGIN, height + 2 * MARGIN)
    assert np.array_equal(got, expected), (
        f"level {level}: max diff {np.abs(got.astype(int) - expected).max()}"
    )
    ds = reference.level_downsamples[level]
    for x, y, w, h in blocks(width, height, tile):
        expected = crop(full, x, y, w, h)
        assert np.array_equal(reader.read_block(level, x, y, w, h), expected), (level, x, y, w, h)
        if ds == round(ds):  # the reference's own block reads (level-0 locations) agree too
            location = (x * int(ds), y * int(ds))
            assert np.array_equal(
                reader.read_region(location, level, (w, h)), reference.read_region(location, level, (w, h))
            )


REAL_SLIDES = [
    ("cmu1_small_region.svs", OpenSlideReader, {0}),  # Aperio: RGB-coded JPEG, shared tables, 240 px tiles
    ("cmu1_small_pyramid_generic.tif", OpenSlideReader, {0, 1, 2}),  # YCbCr 4:2:0, every level
    ("cmu1_small_pyramid.ome.tif", TiffFileReader, {0, 1, 2}),  # SubIFD pyramid: OpenSlide sees one level
    ("os1_detail.ome.tif", TiffFileReader, {0}),  # big-endian OME that OpenSlide refuses
]


@pytest.mark.parametrize(("name", "reference_type", "levels"), REAL_SLIDES)
def test_real_slides_decode_bit_identically(
    shared_data: Path, name: str, reference_type: type, levels: set
) -> None:
    path = shared_data / "slides" / name
    reader = batched(path)
    try:
        assert reader.levels == levels
        with reference_type(path) as reference:
            for level in sorted(levels):
                assert_matches(reader, reference, level, reader.spec(level).tile_w)
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("name", "jpeg_levels"), [(n, {0} if r is OpenSlideReader else lv) for n, r, lv in REAL_SLIDES]
)
def test_fast_block_reader_serves_the_jpeg_levels_of_real_slides(
    shared_data: Path, name: str, jpeg_levels: set
) -> None:
    """OpenSlide's fractional-downsample levels (generic TIFF 1, 2) stay with OpenSlide (it blends)."""
    with open_slide(shared_data / "slides" / name) as reader:
        fast = fast_block_reader(reader)
        try:
            assert isinstance(fast, FastBlockReader) and fast.jpeg_levels == jpeg_levels
            mpp = reader.metadata_mpp or 0.25
            args = (17, 29, 900 * 0.972 / mpp, 700 * 0.972 / mpp, 900, 700)
            assert np.array_equal(read_region_at_mpp(fast, *args), read_region_at_mpp(reader, *args))
        finally:
            fast.close()
        assert reader.read_region((0, 0), 0, (4, 4)).shape == (4, 4, 3)  # primary left open


@pytest.mark.parametrize("colour", ["ycbcr420", "ycbcr444", "rgb", "rgb_bare"])
@pytest.mark.parametrize("shared_tables", [False, True])
def test_written_jpeg_tiffs_equal_openslide_and_tifffile(
    tmp_path: Path, colour: str, shared_tables: bool
) -> None:
    image = textured(777, 1001)  # partial edge tiles both ways
    path = write_jpeg_tiff(tmp_path / "x.tif", image, tile=256, colour=colour, shared_tables=shared_tables)
    spec = jpeg_level(tifffile.TiffFile(path).pages[0])
    assert spec is not None and (spec.tables is not None) == shared_tables
    assert spec.rgb_coded == colour.startswith("rgb")
    reader = batched(path, threads=3)
    try:
        with OpenSlideReader(path) as reference:
            assert_matches(reader, reference, 0, 256)
        with TiffFileReader(path) as reference:
            assert np.array_equal(
                reader.read_block(0, 0, 0, 1001, 777), reference.read_region((0, 0), 0, (1001, 777))
            )
        assert (
            np.abs(reader.read_block(0, 0, 0, 1001, 777).astype(int) - image).mean() < 10
        )  # not just equal: right
    finally:
        reader.close()


def test_aperio_style_tiles_need_the_rgb_hint(tmp_path: Path) -> None:
    """Without the TIFF's photometric RGB, libjpeg would take id-0,1,2 components for YCbCr."""
    import imagecodecs

    image = textured(256, 256)
    path = write_jpeg_tiff(tmp_path / "bare.tif", image, colour="rgb_bare", shared_tables=True)
    page = tifffile.TiffFile(path).pages[0]
    with open(path, "rb") as fh:
        fh.seek(page.dataoffsets[0])
        data = fh.read(page.databytecounts[0])
    guessed = imagecodecs.jpeg8_decode(data, tables=page.jpegtables, outcolorspace="RGB")
    assert np.abs(guessed.astype(int) - image).mean() > 30
    reader = batched(path)
    assert np.abs(reader.read_block(0, 0, 0, 256, 256).astype(int) - image).mean() < 5
    reader.close()


def test_unwritten_tiles_are_white_like_openslide(tmp_path: Path) -> None:
    path = write_jpeg_tiff(tmp_path / "sparse.tif", textured(300, 300), tile=256)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for name in ("TileOffsets", "TileByteCounts"):
            tag = tif.pages[0].tags[name]
            tag.overwrite([0 if k == 1 else v for k, v in enumerate(tag.value)])
    reader = batched(path)
    got = reader.read_block(0, 0, 0, 300, 300)
    assert (got[:256, 256:] == 255).all() and not (got[:256, :256] == 255).all()
    with OpenSlideReader(path) as reference:
        assert np.array_equal(got, reference.read_region((0, 0), 0, (300, 300)))
    reader.close()


@pytest.mark.parametrize("compression", ["zlib", "lzw", None])
def test_other_codecs_fall_back_to_tifffile(tmp_path: Path, compression: str | None) -> None:
    path = write_pyramidal_tiff(
        tmp_path / "x.tif", textured(600, 500), mpp=0.5, levels=2, compression=compression
    )
    with TiffFileReader(path) as tiff:
        assert jpeg_level(tiff.level_page(0)) is None and jpeg_block_reader(tiff) is None
    with open_slide(path) as reader:
        fast = fast_block_reader(reader)
        assert (
            isinstance(fast, FastBlockReader)
            and fast.jpeg_levels == frozenset()
            and fast.tiff_levels == {0, 1}
        )
        assert np.array_equal(
            fast.read_region((0, 0), 0, (500, 600)), reader.read_region((0, 0), 0, (500, 600))
        )
        fast.close()


def test_jpeg_2000_svs_has_no_jpeg_levels(shared_data: Path) -> None:
    with TiffFileReader(shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs") as tiff:
        assert jpeg_block_reader(tiff) is None


def test_neighbouring_blocks_share_decoded_tiles(tmp_path: Path) -> None:
    path = write_jpeg_tiff(tmp_path / "x.tif", textured(1024, 1024), tile=256)
    reader = batched(path, threads=1)
    reader.read_block(0, 100, 100, 300, 300)  # tiles (0..1, 0..1)
    assert reader.tiles_decoded == 4
    reader.read_block(0, 400, 100, 300, 300)  # tiles (1..2, 0..1): column 1 is cached
    assert reader.tiles_decoded == 6
    reader.close()
    uncached = batched(path, threads=1, cache_bytes=0)
    uncached.read_block(0, 100, 100, 300, 300)
    uncached.read_block(0, 400, 100, 300, 300)
    assert uncached.tiles_decoded == 8
    uncached.close()


def test_thread_counts_and_concurrent_callers_agree(tmp_path: Path) -> None:
    path = write_jpeg_tiff(tmp_path / "x.tif", textured(1100, 1300), tile=128, shared_tables=True)
    one = batched(path, threads=1)
    expected = [one.read_block(0, x, y, 333, 222) for x, y in ((5, 7), (400, 300), (900, 800), (-9, 1000))]
    one.close()
    many = batched(path, threads=4, cache_bytes=0)
    results: dict[int, list[np.ndarray]] = {}

    def work(k: int) -> None:
        results[k] = [
            many.read_block(0, x, y, 333, 222) for x, y in ((5, 7), (400, 300), (900, 800), (-9, 1000))
        ]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    many.close()
    for got in results.values():
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_cuda_request_without_a_gpu_library_decodes_on_the_cpu() -> None:
    try:
        import nvidia.nvimgcodec  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("nvImageCodec is installed: a CUDA request may get nvJPEG")
    for device in ("cuda", "cuda:1", "cpu", None):
        decoder = tile_decoder(device, threads=2)
        assert isinstance(decoder, CpuJpegDecoder) and decoder.threads == 2 and decoder.tolerance == 0
        decoder.close()
