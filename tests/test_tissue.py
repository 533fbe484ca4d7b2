"""Tissue detection: blank glass, white images, real H&E, and synthetic masks with known geometry."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.errors import SlideTooLargeError
from wsi_pipeline.slide import open_slide
from wsi_pipeline.testing import write_empty_giant_tiff, write_pyramidal_tiff
from wsi_pipeline.tissue import TissueMask, TissueParams, detect_tissue, tissue_mask_from_rgb

PINK = (214, 120, 180)


def test_blank_glass_slide_has_no_tissue(shared_data: Path) -> None:
    path = shared_data / "slides" / "broken" / "blank_no_tissue.tif"
    with open_slide(path) as reader:
        mask = detect_tissue(reader, reader.metadata_mpp)
    assert mask.is_empty and mask.tissue_fraction == 0.0


def test_real_he_slide_has_tissue(shared_data: Path) -> None:
    path = shared_data / "slides" / "cmu1_small_region.svs"
    with open_slide(path) as reader:
        mask = detect_tissue(reader, reader.metadata_mpp)
        region = reader.read_region((0, 0), 0, reader.dimensions)
    assert not mask.is_empty
    assert 0.2 < mask.tissue_fraction < 0.6
    assert mask.scale == pytest.approx(8.0 / 0.499, rel=0.02)
    # Tissue pixels in the mask are darker and more saturated than the rest, at full resolution.
    full = np.kron(mask.mask, np.ones((16, 16), bool))[: region.shape[0], : region.shape[1]]
    full = np.pad(full, ((0, region.shape[0] - full.shape[0]), (0, region.shape[1] - full.shape[1])))
    assert region[full].mean() < region[~full].mean() - 40


def test_all_tissue_crop(shared_data: Path) -> None:
    with open_slide(shared_data / "slides" / "os1_detail.ome.tif") as reader:
        mask = detect_tissue(reader, reader.metadata_mpp)
    assert mask.tissue_fraction > 0.9


@pytest.mark.parametrize("noise", [0, 3])
def test_white_image_has_no_tissue(noise: int) -> None:
    rng = np.random.default_rng(0)
    image = np.full((300, 400, 3), 245, np.int16) + rng.integers(-noise, noise + 1, (300, 400, 3))
    mask, _ = tissue_mask_from_rgb(image.clip(0, 255).astype(np.uint8), um_per_px=8.0)
    assert not mask.any()


def test_black_border_is_not_tissue() -> None:
    image = np.full((200, 200, 3), 240, np.uint8)
    image[:, :30] = 0
    mask, _ = tissue_mask_from_rgb(image, um_per_px=8.0)
    assert not mask.any()


def _square_slide(tmp_path: Path) -> tuple[Path, tuple[int, int, int, int]]:
    rng = np.random.default_rng(2)
    image = np.full((1600, 2000, 3), 244, np.uint8)
    x0, y0, x1, y1 = 480, 320, 1280, 960
    tissue = np.array(PINK, np.int16) + rng.integers(-25, 26, (y1 - y0, x1 - x0, 3))
    image[y0:y1, x0:x1] = tissue.clip(0, 255)
    image[700:740, 800:840] = 244  # small hole: filled
    image[1400:1410, 1700:1710] = PINK  # speck: removed
    return write_pyramidal_tiff(tmp_path / "square.tif", image, 0.5, levels=3), (x0, y0, x1, y1)


def test_square_of_tissue_geometry(tmp_path: Path) -> None:
    path, (x0, y0, x1, y1) = _square_slide(tmp_path)
    with open_slide(path) as reader:
        mask = detect_tissue(reader, 0.5)
    assert mask.scale == pytest.approx(16.0)
    assert mask.mask.shape == (100, 125)
    assert mask.fraction_in(x0 + 64, y0 + 64, 192, 192) == 1.0
    assert mask.fraction_in(760, 660, 120, 120) == 1.0  # hole filled
    assert mask.fraction_in(1600, 1300, 192, 192) == 0.0  # speck removed
    assert mask.fraction_in(x1 - 96, y0 + 64, 192, 192) == pytest.approx(0.5, abs=0.1)
    assert mask.fraction_in(-500, -500, 100, 100) == 0.0
    rows, cols = np.nonzero(mask.mask)  # the tissue's bounding box, level-0 px
    bounds = (cols.min() * mask.scale_x, rows.min() * mask.scale_y, (cols.max() + 1) * mask.scale_x,
              (rows.max() + 1) * mask.scale_y)  # fmt: skip
    assert np.allclose(bounds, (x0, y0, x1, y1), atol=24)
    assert mask.mask.sum() * mask.scale_x * mask.scale_y == pytest.approx((x1 - x0) * (y1 - y0), rel=0.05)


def test_tile_fractions_vectorised_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    grid = rng.random((40, 60)) > 0.5
    tm = TissueMask(grid, scale_x=8.0, scale_y=8.0, slide_size=(480, 320))
    xs = rng.uniform(-40, 480, 500)
    ys = rng.uniform(-40, 320, 500)
    fractions = tm.tile_fractions(xs, ys, 64.0, 64.0)
    assert fractions.shape == (500,)
    for k in range(0, 500, 7):
        j0, i0 = int(np.floor(xs[k] / 8 + 0.5)), int(np.floor(ys[k] / 8 + 0.5))
        padded = np.pad(grid, 20)
        brute = padded[i0 + 20 : i0 + 28, j0 + 20 : j0 + 28].mean()
        assert fractions[k] == pytest.approx(brute)
        assert tm.fraction_in(xs[k], ys[k], 64.0, 64.0) == pytest.approx(brute)


def test_tile_smaller_than_mask_pixel_uses_its_centre_pixel() -> None:
    grid = np.zeros((4, 4), bool)
    grid[1, 2] = True
    tm = TissueMask(grid, scale_x=100.0, scale_y=100.0, slide_size=(400, 400))
    assert tm.fraction_in(230, 130, 20, 20) == 1.0
    assert tm.fraction_in(330, 130, 20, 20) == 0.0


def test_tissue_mask_is_frozen_and_checked() -> None:
    import dataclasses

    tm = TissueMask(np.ones((4, 4), bool), 2.0, 2.0, (8, 8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        tm.scale_x = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="boolean"):
        TissueMask(np.ones((4, 4), np.uint8), 2.0, 2.0, (8, 8))
    with pytest.raises(ValueError, match="scales"):
        TissueMask(np.ones((4, 4), bool), 0.0, 2.0, (8, 8))


def _pale_tissue_slide(tmp_path: Path) -> tuple[Path, dict[str, tuple[slice, slice]]]:
    """Glass (242 +- 1.5) at 0.5 um/px with three separate 640 x 640 px pieces of tissue: stained H&E, pale
    loose stroma (faint, barely saturated, textured) and fat (white cells of 80 um in 2 um pink
    membranes, brighter than the glass inside the cells)."""
    rng = np.random.default_rng(4)
    image = (np.full((1200, 2560, 3), 242.0) + rng.normal(0, 1.5, (1200, 2560, 3))).clip(0, 255)
    regions = {
        "stained": (slice(160, 800), slice(160, 800)),
        "stroma": (slice(160, 800), slice(960, 1600)),
        "fat": (slice(160, 800), slice(1760, 2400)),
    }
    image[regions["stained"]] = np.array(PINK) + rng.normal(0, 20, (640, 640, 3))
    stroma = np.array([226.0, 219.0, 224.0]) + rng.normal(0, 10, (640, 640, 1))
    image[regions["stroma"]] = stroma + rng.normal(0, 2, (640, 640, 3))
    fat = np.full((640, 640, 3), 247.0)
    yy, xx = np.mgrid[0:640, 0:640]
    membrane = ((yy % 160) < 4) | ((xx % 160) < 4) | (yy >= 636) | (xx >= 636)
    fat[membrane] = (205, 160, 190)
    image[regions["fat"]] = fat + rng.normal(0, 1.5, fat.shape)
    path = write_pyramidal_tiff(tmp_path / "pale.tif", image.clip(0, 255).astype(np.uint8), 0.5, levels=3)
    return path, regions


def test_pale_tissue_is_kept_and_glass_is_not(tmp_path: Path) -> None:
    path, regions = _pale_tissue_slide(tmp_path)
    with open_slide(path) as reader:
        mask = detect_tissue(reader, 0.5)
    for name, (ys, xs) in regions.items():
        inner = mask.fraction_in(xs.start + 32, ys.start + 32, 640 - 64, 640 - 64)
        assert inner > 0.97, f"{name}: {inner:.3f} of the tissue kept"
    glass = mask.mask.copy()
    for ys, xs in regions.values():  # everything farther than 16 um (2 mask px) from a piece is glass
        glass[(ys.start // 16) - 2 : (ys.stop // 16) + 2, (xs.start // 16) - 2 : (xs.stop // 16) + 2] = False
    assert not glass.any()
    assert mask.fraction_in(0, 880, 2560, 320) == 0.0  # plain glass


def test_white_padding_outside_the_scan_does_not_make_grey_glass_tissue() -> None:
    # a scanned area of slightly grey glass (232) inside pure white padding (255), one piece of tissue
    rng = np.random.default_rng(1)
    image = np.full((300, 400, 3), 255.0)
    image[50:250, 50:350] = 232 + rng.normal(0, 1.0, (200, 300, 3))
    image[100:200, 100:200] = np.array(PINK) + rng.normal(0, 15, (100, 100, 3))
    mask, _ = tissue_mask_from_rgb(image.clip(0, 255).astype(np.uint8), um_per_px=8.0)
    assert mask[105:195, 105:195].all()
    outside = np.ones_like(mask)
    outside[95:205, 95:205] = False
    assert not (mask & outside).any()


def test_simulated_slides_from_real_patches_have_their_tissue_analysed(
    shared_data: Path, tmp_path: Path
) -> None:
    from wsi_pipeline.data import open_patch_dataset
    from wsi_pipeline.evaluation.slide_metrics import analysed_cells
    from wsi_pipeline.simulate import SimulationSpec, SlideTruth, build_slide_set
    from wsi_pipeline.slide import describe_slide
    from wsi_pipeline.stages import select_tissue_cells
    from wsi_pipeline.tiling import plan_grid

    dataset = open_patch_dataset(shared_data / "hcd_patches")
    spec = SimulationSpec(grid=(36, 36), micro_mm=(0.3, 0.6))
    indices = np.arange(len(dataset.labels))
    slides = build_slide_set(
        dataset, indices, tmp_path, counts={"negative": 1, "micro": 1}, seed=3, spec=spec
    )
    for slide, truth_file in slides:
        truth = SlideTruth.load(truth_file)
        with open_slide(slide) as reader:
            info = describe_slide(reader, None)
            grid = plan_grid(info, 96, 0.972)
            cells = select_tissue_cells(info, grid, detect_tissue(reader, info.mpp), 0.25)
        analysed = analysed_cells(truth.plan.tissue.shape, truth.cell_px, grid.tile_boxes(cells))
        placed = truth.plan.tissue
        assert (analysed & placed).sum() / placed.sum() >= 0.97
        assert not (analysed & ~placed).any()  # no glass cell analysed
        assert analysed[truth.plan.tumour].all()


def test_giant_slide_without_a_pyramid_is_refused_quickly(tmp_path: Path) -> None:
    path = write_empty_giant_tiff(tmp_path / "giant.tif", 100_000, 100_000, mpp=0.25)
    assert path.stat().st_size < 2_000_000
    t0 = time.perf_counter()
    with open_slide(path) as reader:
        assert reader.dimensions == (100_000, 100_000) and reader.level_count == 1
        with pytest.raises(
            SlideTooLargeError, match=r"giant\.tif: slide of 100000 x 100000 px has no pyramid"
        ):
            detect_tissue(reader, 0.25)
    assert time.perf_counter() - t0 < 5.0


def test_thumbnail_read_has_a_time_limit(tmp_path: Path) -> None:
    path = write_empty_giant_tiff(tmp_path / "big.tif", 30_000, 30_000, mpp=0.25)
    params = TissueParams(time_limit_s=0.2)  # 0.9 Gpx fits the size guard, not this time limit
    t0 = time.perf_counter()
    with open_slide(path) as reader, pytest.raises(SlideTooLargeError, match=r"big\.tif: .*time limit"):
        detect_tissue(reader, 0.25, params)
    assert time.perf_counter() - t0 < 10.0


def test_mask_comes_from_a_coarser_level_when_the_asked_one_is_too_large(tmp_path: Path) -> None:
    path, (x0, y0, x1, y1) = _square_slide(tmp_path)  # 2000 x 1600 px, levels 1, 2, 4
    with open_slide(path) as reader:
        coarse = detect_tissue(reader, 0.5, TissueParams(mask_mpp=1.0, max_source_px=300_000))
        with pytest.raises(SlideTooLargeError, match=r"no pyramid level of at most 0\.1 Mpx"):
            detect_tissue(reader, 0.5, TissueParams(max_source_px=100_000))
    # asked: 1 um/px from level 1 (1000 x 800 px, too large); got: level 2 (500 x 400 px) as it is
    assert coarse.scale == pytest.approx(4.0) and coarse.mask.shape == (400, 500)
    assert coarse.fraction_in(x0 + 64, y0 + 64, 192, 192) == 1.0


def test_banded_mask_equals_one_whole_image_pass() -> None:
    """The mask is computed in bands of rows (bounded memory); the bands' halos must make it equal to
    filtering the whole thumbnail at once (a too-small halo shows at band borders)."""
    from scipy import ndimage
    from skimage.filters import gaussian

    from wsi_pipeline import tissue

    rng = np.random.default_rng(3)
    rows = 3 * tissue._BAND + 37  # several bands and a short last one
    rgb = np.full((rows, 300, 3), 235, np.uint8)
    rgb[:, 40:260] = rng.integers(120, 236, size=(rows, 220, 3), dtype=np.uint8)  # textured tissue
    rgb[tissue._BAND - 3 : tissue._BAND + 3, :, 1] = 60  # a saturated line across a band border
    smooth, high, low = tissue._saturation(rgb)
    pixels = rgb.astype(np.float32)
    hi, lo = pixels.max(axis=2), pixels.min(axis=2)
    whole = gaussian(np.where(hi > 0, (hi - lo) / np.maximum(hi, 1.0), 0.0), sigma=1.0, preserve_range=True)
    np.testing.assert_allclose(smooth, whole, atol=1e-5)
    assert (high == hi).all() and (low == lo).all()

    params = tissue.TissueParams()
    glass = tissue.glass_level(low, smooth, params)
    mean = ndimage.uniform_filter(lo, 3)
    std = np.sqrt(np.maximum(ndimage.uniform_filter(lo * lo, 3) - mean * mean, 0.0))
    pale = (lo < glass - params.pale_delta) | (
        (std > params.texture_level) & (lo < glass - params.texture_delta)
    )
    banded = tissue._pale_tissue(low, smooth, params)
    assert 0.05 < banded.mean() < 0.95  # the case exercises both outcomes
    assert (banded == pale).all()
