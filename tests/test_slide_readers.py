"""Slide back ends: real slides (shared data), broken inputs, generated slides with known pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_pipeline.errors import OptionError, SlideOpenError, SlideReadError, UnknownMppError
from wsi_pipeline.slide import (
    OpenSlideReader,
    TiffFileReader,
    open_slide,
    read_region_at_mpp,
    resolve_mpp,
    thumbnail,
)
from wsi_pipeline.testing import gradient_image, write_ome_tiff, write_pyramidal_tiff

# name: (back end class, (width, height), level count, mpp or None)
REAL_SLIDES = {
    "cmu1_small_region.svs": (OpenSlideReader, (2220, 2967), 1, 0.499),
    "tcga-cr-7395-01a-01-ts1.svs": (OpenSlideReader, (4443, 3567), 2, None),
    "os1_detail.ome.tif": (TiffFileReader, (1101, 1101), 1, 0.2271),
    "cmu1_small_pyramid_generic.tif": (OpenSlideReader, (2220, 2967), 3, 0.499),
    "cmu1_small_pyramid.ome.tif": (TiffFileReader, (2220, 2967), 3, 0.499),
    "broken/blank_no_tissue.tif": (OpenSlideReader, (2048, 2048), 3, 0.5),
    "broken/corrupt_tiles_cmu1_pyramid.tif": (OpenSlideReader, (2220, 2967), 3, 0.499),
    "format_fixtures/openslide-python_small.svs": (OpenSlideReader, (16, 16), 1, 0.499),
    "format_fixtures/openslide-python_boxes.tiff": (OpenSlideReader, (300, 250), 4, None),
    "format_fixtures/openslide-python_boxes_0.dcm": (OpenSlideReader, (16, 16), 1, 0.499),
}


@pytest.mark.parametrize("name", sorted(REAL_SLIDES))
def test_real_slide_opens_with_documented_geometry(shared_data: Path, name: str) -> None:
    cls, dims, levels, mpp = REAL_SLIDES[name]
    with open_slide(shared_data / "slides" / name) as reader:
        assert isinstance(reader, cls)
        assert reader.dimensions == dims
        assert reader.level_count == levels
        assert reader.level_dimensions[0] == dims
        assert reader.level_downsamples[0] == 1.0
        assert all(
            a < b for a, b in zip(reader.level_downsamples, reader.level_downsamples[1:], strict=False)
        )
        if mpp is not None:
            assert reader.metadata_mpp == pytest.approx(mpp, abs=1e-3)
        region = reader.read_region((0, 0), reader.level_count - 1, (16, 12))
        assert region.shape == (12, 16, 3) and region.dtype == np.uint8


def test_tcga_slide_without_mpp_needs_override(shared_data: Path) -> None:
    path = shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as reader:
        assert reader.metadata_mpp is None
        with pytest.raises(UnknownMppError) as info:
            resolve_mpp(reader, None)
        message = str(info.value)
        assert "--mpp" in message and path.name in message and "\n" not in message
        assert resolve_mpp(reader, 0.5) == 0.5
        with pytest.raises(OptionError, match="--mpp"):
            resolve_mpp(reader, -1.0)


def test_override_wins_over_metadata(shared_data: Path) -> None:
    with open_slide(shared_data / "slides" / "cmu1_small_region.svs") as reader:
        assert resolve_mpp(reader, None) == pytest.approx(0.499)
        assert resolve_mpp(reader, 0.25) == 0.25


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("empty.svs", "empty"),
        ("not_a_slide.tif", "not a slide"),
        ("truncated_cmu1_small_region.svs", "truncated"),
        ("pathml_small_dicom_TCGA-XK-AAJU.dcm", "DICOM"),
    ],
)
def test_broken_slides_fail_to_open_with_one_line_reason(shared_data: Path, name: str, cause: str) -> None:
    with pytest.raises(SlideOpenError) as info:
        open_slide(shared_data / "slides" / "broken" / name)
    message = str(info.value)
    assert name in message and cause in message and "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError, match="not found"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideOpenError, match="directory"):
        open_slide(tmp_path)


@pytest.mark.parametrize("backend", [open_slide, TiffFileReader])
def test_corrupt_tiles_fail_at_read_time(shared_data: Path, backend) -> None:
    path = shared_data / "slides" / "broken" / "corrupt_tiles_cmu1_pyramid.tif"
    with backend(path) as reader:
        reader.read_region((0, 0), 2, (64, 64))  # the reduced levels are intact
        with pytest.raises(SlideReadError) as info:
            reader.read_region((0, 0), 0, reader.dimensions)
    assert path.name in str(info.value) and "\n" not in str(info.value)


def test_openslide_and_tifffile_agree_on_same_pixels(shared_data: Path) -> None:
    slides = shared_data / "slides"
    with (
        open_slide(slides / "cmu1_small_pyramid_generic.tif") as generic,
        open_slide(slides / "cmu1_small_pyramid.ome.tif") as ome,
        TiffFileReader(slides / "cmu1_small_pyramid_generic.tif") as generic_tf,
    ):
        assert isinstance(generic, OpenSlideReader) and isinstance(ome, TiffFileReader)
        for location, size in [((0, 0), (300, 200)), ((1000, 1500), (512, 512)), ((2100, 2900), (200, 200))]:
            a = generic.read_region(location, 0, size).astype(int)
            b = ome.read_region(location, 0, size).astype(int)
            c = generic_tf.read_region(location, 0, size).astype(int)
            assert np.abs(a - c).mean() < 0.5  # same file, two JPEG decoders
            assert np.abs(a - b).mean() < 5.0  # same pixels, re-encoded JPEG
            assert np.array_equal(a[-1, -1], [255, 255, 255]) == (location == (2100, 2900))
        # Reduced levels of the OME pyramid (SubIFDs) line up with OpenSlide's levels.
        for level in (1, 2):
            a = generic.read_region((800, 800), level, (128, 128)).astype(int)
            b = ome.read_region((800, 800), level, (128, 128)).astype(int)
            assert np.abs(a - b).mean() < 25.0
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_os1_big_endian_ome_reads_tissue(shared_data: Path) -> None:
    with open_slide(shared_data / "slides" / "os1_detail.ome.tif") as reader:
        region = reader.read_region((500, 500), 0, (256, 256))
        assert 60 < region.mean() < 230 and region.std() > 10


# --- generated slides ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gradient() -> np.ndarray:
    return gradient_image(700, 900)


@pytest.fixture(scope="module")
def gradient_slides(tmp_path_factory, gradient: np.ndarray) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gradient")
    return {
        "generic": write_pyramidal_tiff(folder / "g.tif", gradient, 0.25, levels=3, tile=128),
        "ome": write_ome_tiff(folder / "g.ome.tif", gradient, 0.25, levels=3, tile=128),
        "jpeg": write_pyramidal_tiff(folder / "gj.tif", gradient, 0.25, levels=3, compression="jpeg"),
    }


def test_factory_slides_open_with_mpp_and_levels(gradient_slides: dict[str, Path], gradient) -> None:
    for kind, cls in [("generic", OpenSlideReader), ("ome", TiffFileReader), ("jpeg", OpenSlideReader)]:
        with open_slide(gradient_slides[kind]) as reader:
            assert isinstance(reader, cls)
            assert reader.dimensions == (900, 700)
            assert reader.level_dimensions == [(900, 700), (450, 350), (225, 175)]
            assert reader.metadata_mpp == pytest.approx(0.25)
            full = reader.read_region((0, 0), 0, (900, 700)).astype(int)
            tolerance = 3.0 if kind == "jpeg" else 0.0
            assert np.abs(full - gradient).mean() <= tolerance


@pytest.mark.parametrize("kind", ["generic", "ome"])
def test_read_region_at_mpp_matches_area_average(gradient_slides, kind: str) -> None:
    # R ramps linearly along x and G along y, so an area average equals the ramp at the box centre.
    width, height = 900, 700
    x0, y0, out_w, out_h = 101.3, 57.9, 120, 90
    for factor in (1.0, 1.5, 2.0, 3.888, 4.0, 0.5):
        with open_slide(gradient_slides[kind]) as reader:
            image = read_region_at_mpp(reader, x0, y0, out_w * factor, out_h * factor, out_w, out_h)
        assert image.shape == (out_h, out_w, 3)
        centres_x = x0 + (np.arange(out_w) + 0.5) * factor - 0.5
        centres_y = y0 + (np.arange(out_h) + 0.5) * factor - 0.5
        expected_r = 255.0 * centres_x / (width - 1)
        expected_g = 255.0 * centres_y / (height - 1)
        inner = slice(2, -2)
        err_r = image[inner, inner, 0] - expected_r[None, inner]
        err_g = image[inner, inner, 1] - expected_g[inner, None]
        # Pyramid levels add <= 1 of rounding (up to ~0.2 on average here); 1 level-0 px of R / G is
        # 0.28 / 0.36 grey levels, so the mean error bounds any systematic shift to < 1 level-0 px.
        assert np.abs(err_r).max() < 1.6 and np.abs(err_g).max() < 1.6, factor
        assert abs(err_r.mean()) < 0.25 and abs(err_g.mean()) < 0.25, (factor, err_r.mean(), err_g.mean())


def test_read_region_at_mpp_integer_factor_uses_pyramid_level_exactly(gradient_slides, gradient) -> None:
    with open_slide(gradient_slides["generic"]) as reader:
        image = read_region_at_mpp(reader, 200, 100, 400, 200, 100, 50)  # level 2, no resampling
        assert np.array_equal(image, reader.read_region((200, 100), 2, (100, 50)))
        expected = gradient[100:300, 200:600].reshape(50, 4, 100, 4, 3).mean(axis=(1, 3))
        assert np.abs(image - expected).max() <= 1.0


def test_block_reads_equal_single_read(gradient_slides) -> None:
    with open_slide(gradient_slides["ome"]) as reader:
        whole = read_region_at_mpp(reader, 10.5, 20.25, 777.7, 555.5, 400, 286).astype(int)
        blocks = read_region_at_mpp(reader, 10.5, 20.25, 777.7, 555.5, 400, 286, max_block=50).astype(int)
    assert np.abs(whole - blocks).max() <= 1


def test_region_outside_slide_is_white(gradient_slides) -> None:
    for kind in ("generic", "ome"):
        with open_slide(gradient_slides[kind]) as reader:
            region = reader.read_region((850, 650), 0, (100, 100))
            assert (region[60:, :] == 255).all() and (region[:, 60:] == 255).all()
            assert not (region[:50, :50] == 255).all()
            assert (reader.read_region((-500, -500), 0, (100, 100)) == 255).all()


class _SpyReader(TiffFileReader):
    """Records the largest read so tests can prove whole levels are never requested."""

    largest = 0

    def read_region(self, location, level, size):
        type(self).largest = max(type(self).largest, size[0] * size[1])
        return super().read_region(location, level, size)


def test_thumbnail_of_flat_slide_reads_bounded_blocks(tmp_path: Path, gradient) -> None:
    big = np.tile(gradient, (3, 3, 1))  # 2100 x 2700, single level
    path = write_ome_tiff(tmp_path / "flat.ome.tif", big, 0.5, levels=1, tile=256)
    _SpyReader.largest = 0
    with _SpyReader(path) as reader:
        thumb = thumbnail(reader, max_size=300, max_block=512)
        assert thumb.shape == (233, 300, 3)
        assert 0 < _SpyReader.largest <= 520 * 520
        # only the tiles touched by a small read are decoded
        reader._cache.clear()
        reader.read_region((300, 300), 0, (100, 100))
        assert len(reader._cache) == 1
    expected = np.asarray(Image.fromarray(big).resize((300, 233), resample=Image.Resampling.BOX))
    assert np.abs(thumb.astype(int) - expected).mean() < 2.0


def _write_flat(path: Path, data: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, data, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", **kwargs)
    return path


def test_tifffile_reader_handles_grey_alpha_uint16_planar_and_strips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    alpha = np.zeros((64, 80), np.uint8)
    alpha[:, 40:] = 255
    cases = {
        "grey": (_write_flat(tmp_path / "grey.tif", grey, tile=(32, 32)), np.repeat(grey[..., None], 3, 2)),
        "strips": (_write_flat(tmp_path / "strips.tif", rgb, rowsperstrip=7), rgb),
        "planar": (_write_flat(tmp_path / "planar.tif", rgb.transpose(2, 0, 1), photometric="rgb"), rgb),
        "uint16": (_write_flat(tmp_path / "u16.tif", rgb.astype(np.uint16) * 257, tile=(16, 16)), rgb),
        "rgba": (
            _write_flat(tmp_path / "rgba.tif", np.dstack([rgb, alpha]), extrasamples=["unassalpha"]),
            np.where(alpha[..., None] == 255, rgb, 255),
        ),
        "grey_alpha": (
            _write_flat(
                tmp_path / "ga.tif",
                np.dstack([grey, alpha]),
                photometric="minisblack",
                extrasamples=["unassalpha"],
                planarconfig="contig",
            ),
            np.where(alpha[..., None] == 255, np.repeat(grey[..., None], 3, 2), 255),
        ),
    }
    for name, (path, expected) in cases.items():
        with TiffFileReader(path) as reader:
            assert reader.dimensions == (80, 64), name
            assert reader.metadata_mpp == pytest.approx(0.5), name
            region = reader.read_region((5, 3), 0, (70, 61))
            assert region.dtype == np.uint8 and region.shape == (61, 70, 3), name
            assert np.array_equal(region[:, :70], _pad_white(expected)[3:64, 5:75]), name


def _pad_white(image: np.ndarray) -> np.ndarray:
    out = np.full((image.shape[0] + 10, image.shape[1] + 10, 3), 255, np.uint8)
    out[: image.shape[0], : image.shape[1]] = image
    return out


def test_openslide_rgba_alpha_composited_on_white(tmp_path: Path) -> None:
    rgb = np.full((64, 64, 3), 40, np.uint8)
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, 32:] = 255
    path = write_pyramidal_tiff(tmp_path / "rgba.tif", np.dstack([rgb, alpha]), 0.5, levels=1, tile=32)
    with OpenSlideReader(path) as reader:
        region = reader.read_region((0, 0), 0, (64, 64))
    assert (region[:, :32] == 255).all() and (region[:, 32:] == 40).all()


def test_resolution_units_inch_and_ome_nanometres(tmp_path: Path) -> None:
    data = np.zeros((32, 32, 3), np.uint8)
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(inch, data, resolution=(25400 / 0.4, 25400 / 0.4), resolutionunit="INCH", tile=(16, 16))
    with TiffFileReader(inch) as reader:
        assert reader.metadata_mpp == pytest.approx(0.4)
    ome = tmp_path / "nm.ome.tif"
    tifffile.imwrite(
        ome, data, ome=True, metadata={"axes": "YXS", "PhysicalSizeX": 250.0, "PhysicalSizeXUnit": "nm"}
    )
    with open_slide(ome) as reader:
        assert isinstance(reader, TiffFileReader)
        assert reader.metadata_mpp == pytest.approx(0.25)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, data, tile=(16, 16), resolutionunit="NONE")
    with TiffFileReader(plain) as reader:
        assert reader.metadata_mpp is None
        with pytest.raises(UnknownMppError, match="--mpp"):
            resolve_mpp(reader)


def test_truncated_generated_tiff(tmp_path: Path, gradient) -> None:
    path = write_pyramidal_tiff(tmp_path / "t.tif", gradient, 0.5, levels=2)
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideOpenError, match="truncated"):
        open_slide(cut)


def test_area_resample_is_exact_area_average() -> None:
    from wsi_pipeline.slide.regions import area_resample

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    fine = np.repeat(np.repeat(pixels.astype(np.float64), 4, axis=0), 4, axis=1)  # 0.25-px supersampling
    left, top, step_x, step_y, out_w, out_h = 1.25, 2.75, 2.5, 1.75, 18, 20
    result = area_resample(pixels, left, top, step_x, step_y, out_w, out_h).astype(int)
    expected = np.empty((out_h, out_w, 3))
    for i in range(out_h):
        for j in range(out_w):
            y0, y1 = int((top + i * step_y) * 4), int((top + (i + 1) * step_y) * 4)
            x0, x1 = int((left + j * step_x) * 4), int((left + (j + 1) * step_x) * 4)
            expected[i, j] = fine[y0:y1, x0:x1].mean(axis=(0, 1))
    assert np.abs(result - expected).max() <= 0.51


def test_tifffile_reader_is_thread_safe(gradient_slides, gradient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    locations = [(x, y) for x in range(0, 800, 70) for y in range(0, 600, 90)]
    # a tiny cache forces evictions while other threads read
    with TiffFileReader(gradient_slides["ome"], cache_bytes=200_000) as reader, ThreadPoolExecutor(4) as pool:
        regions = list(pool.map(lambda loc: reader.read_region(loc, 0, (100, 100)), locations))
    for (x, y), region in zip(locations, regions, strict=True):
        expected = _pad_white(gradient[y : y + 100, x : x + 100])[:100, :100]
        assert np.array_equal(region, expected)


def test_composite_on_white_partial_alpha() -> None:
    from wsi_pipeline.slide._color import to_rgb

    pixels = np.array([[[100, 50, 0, 255], [100, 50, 0, 0], [100, 50, 0, 128], [50, 25, 0, 128]]], np.uint8)
    straight = to_rgb(pixels, premultiplied_alpha=False)
    assert straight.tolist() == [[[100, 50, 0], [255, 255, 255], [177, 152, 127], [152, 140, 127]]]
    premultiplied = to_rgb(pixels, premultiplied_alpha=True)
    assert premultiplied[0, 3].tolist() == [177, 152, 127]
