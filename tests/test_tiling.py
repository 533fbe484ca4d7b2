"""Tile grid geometry, selection by tissue fraction, block reads, the level plan and the mosaic truth."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.errors import NoTissueError, OptionError, UnknownMppError
from wsi_pipeline.slide import open_slide, read_region_at_mpp
from wsi_pipeline.testing import PATCH, build_patch_mosaic, gradient_image, write_pyramidal_tiff
from wsi_pipeline.tiling import TileGrid
from wsi_pipeline.tissue import TissueMask


def test_grid_covers_the_slide_with_edge_tiles_overhanging() -> None:
    # model 1.0 um/px on a 0.5 um/px slide: a 96-px tile spans 192 level-0 px
    for width, cols in [(960, 5), (959, 5), (961, 6), (1000, 6), (191, 0), (192, 1), (193, 2)]:
        grid = TileGrid(width, 500, slide_mpp=0.5, patch_size=96, model_mpp=1.0)
        assert grid.tile_size0 == 192 and grid.stride0 == 192
        assert grid.shape == (3, cols)  # 500 px: two full rows and one overhanging by 76 px
    # stride 32 (64 level-0 px): cell footprints (64 px, centred, 64 px in) start inside the slide
    overlapping = TileGrid(1000, 500, slide_mpp=0.5, patch_size=96, model_mpp=1.0, stride=32)
    assert overlapping.stride0 == 64
    assert overlapping.shape == (math.ceil((500 - 64) / 64), math.ceil((1000 - 64) / 64))
    footprints = overlapping.cell_geometry().edges(overlapping.shape[1], axis=1)
    assert footprints[-2] < 1000 <= footprints[-1]  # the last footprint reaches the edge


def test_tiles_positions_match_cell_origin_and_cover_the_slide() -> None:
    grid = TileGrid(2220, 2967, slide_mpp=0.499, stride=32)
    tiles = grid.tiles()
    rows, cols = grid.shape
    assert len(tiles) == rows * cols == len(grid)
    geometry = grid.cell_geometry()
    assert geometry.edges(cols, axis=1)[-1] >= 2220 > geometry.edges(cols, axis=1)[-2]
    assert geometry.edges(rows, axis=0)[-1] >= 2967 > geometry.edges(rows, axis=0)[-2]
    assert (tiles.x < 2220).all() and (tiles.y < 2967).all()
    assert grid.cell_origin(0, cols - 1)[0] + grid.tile_size0 > 2220  # the last column overhangs
    for k in (0, 17, len(tiles) - 1):
        assert grid.cell_origin(tiles.rows[k], tiles.cols[k]) == pytest.approx((tiles.x[k], tiles.y[k]))
    assert tiles.x[1] - tiles.x[0] == pytest.approx(32 * 0.972 / 0.499)


def test_cell_footprints_are_the_label_squares_when_stride_is_label_size() -> None:
    grid = TileGrid(4000, 4000, slide_mpp=0.25, stride=32)
    geometry = grid.cell_geometry()
    x, y = geometry.edges(6, axis=1)[5], geometry.edges(6, axis=0)[3]  # cell (3, 5)
    x_next = geometry.edges(7, axis=1)[6]
    w = geometry.size
    assert x_next == pytest.approx(x + w)
    assert w == pytest.approx(32 * 0.972 / 0.25)
    tile_x, tile_y = grid.cell_origin(3, 5)
    assert x - tile_x == pytest.approx(32 * 0.972 / 0.25)  # (96 - 32) / 2 model px
    assert y - tile_y == pytest.approx(x - tile_x)
    described = grid.describe()
    assert described.shape == grid.shape and described.stride_model_px == 32
    assert described.cell_origin_level0[0] == pytest.approx(x - tile_x)
    assert described.cell_size_level0_px == pytest.approx(w) and described.level == 0


def test_select_by_tissue_fraction() -> None:
    from wsi_pipeline.slide import SlideInfo
    from wsi_pipeline.stages import select_tissue_cells

    grid = TileGrid(1536, 768, slide_mpp=1.0, patch_size=96, model_mpp=1.0)  # 8 x 16 tiles of 96 px
    mask = np.zeros((48, 96), bool)  # 16 level-0 px per mask px
    mask[:, :48] = True  # left half is tissue
    tm = TissueMask(mask, 16.0, 16.0, (1536, 768))
    slide = SlideInfo(Path("s.tif"), "test", (1536, 768), (1.0,), 1.0, "metadata")
    kept = select_tissue_cells(slide, grid, tm, 0.25)
    assert len(kept) == 8 * 8
    assert set(kept[:, 1].tolist()) == set(range(8))
    np.testing.assert_array_equal(grid.tile_boxes(kept)[:, 0], kept[:, 1] * 96.0)
    with pytest.raises(NoTissueError, match=r"s\.tif: no tissue found"):
        select_tissue_cells(slide, grid, TissueMask(np.zeros((48, 96), bool), 16.0, 16.0, (1536, 768)), 0.25)


def test_invalid_geometry_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="slide mpp"):
        TileGrid(100, 100, slide_mpp=0.0)
    with pytest.raises(OptionError, match="stride"):
        TileGrid(100, 100, slide_mpp=0.5, stride=-3)
    with pytest.raises(OptionError, match="stride"):
        TileGrid(100, 100, slide_mpp=0.5, stride=2.5)


def test_block_tiles_equal_single_tile_reads(tmp_path: Path) -> None:
    from wsi_pipeline.inference import plan_blocks, tile_views
    from wsi_pipeline.stages import grid_block_reader

    path = write_pyramidal_tiff(tmp_path / "g.tif", gradient_image(1200, 1400), 0.25, levels=3)
    with open_slide(path) as reader:
        grid = TileGrid(*reader.dimensions, slide_mpp=0.25, stride=48)
        cells = np.argwhere(np.ones(grid.shape, bool))
        blocks = plan_blocks(cells, 3)
        assert sum(b.n_rows * b.n_cols for b in blocks) == len(grid)
        block = blocks[1]
        image = grid_block_reader(reader, grid)(block.row0, block.col0, block.n_rows, block.n_cols)
        region = grid.block_region(block.row0, block.col0, block.n_rows, block.n_cols)
        assert image.shape == (region.out_h, region.out_w, 3) == (48 * 2 + 96, 48 * 2 + 96, 3)
        cut = tile_views(image, 96, 48)
        for r in range(block.n_rows):
            for c in range(block.n_cols):
                x, y = grid.cell_origin(block.row0 + r, block.col0 + c)
                single = read_region_at_mpp(reader, x, y, grid.tile_size0, grid.tile_size0, 96, 96)
                assert np.abs(cut[r, c].astype(int) - single).max() <= 1


def test_block_region_is_the_bounding_box_of_its_cells() -> None:
    grid = TileGrid(960, 960, slide_mpp=1.0, patch_size=96, model_mpp=1.0)  # 10 x 10
    region = grid.block_region(2, 3, 3, 2)  # rows 2..4, cols 3..4
    assert (region.x0, region.y0) == (3 * 96, 2 * 96)
    assert (region.out_w, region.out_h) == (96 * 2, 96 * 3) and region.width0 == 96 * 2
    with pytest.raises(ValueError, match="empty block"):
        grid.block_region(0, 0, 0, 1)


def test_mosaic_cells_map_to_grid_cells(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    patches = rng.integers(0, 200, (6, PATCH, PATCH, 3), dtype=np.uint8)
    labels = [0, 1, 0, 1, 1, 0]
    layout = np.array([[-1, 0, 1, -1], [2, 3, -1, 4], [5, -1, -1, -1]])
    image, truth = build_patch_mosaic(patches, labels, layout)
    assert image.shape == (3 * PATCH, 4 * PATCH, 3)
    assert truth.tolist() == [[-1, 0, 1, -1], [0, 1, -1, 1], [0, -1, -1, -1]]
    assert (image[:PATCH, :PATCH] == 255).all()
    path = write_pyramidal_tiff(tmp_path / "mosaic.tif", image, 0.972, levels=2, compression=None)
    with open_slide(path) as reader:
        grid = TileGrid(*reader.dimensions, slide_mpp=0.972)  # model resolution = slide resolution
        assert grid.shape == truth.shape
        for r, c in zip(*np.nonzero(truth >= 0), strict=True):
            x, y = grid.cell_origin(r, c)
            tile = read_region_at_mpp(reader, x, y, grid.tile_size0, grid.tile_size0, PATCH, PATCH)
            assert np.array_equal(tile, patches[layout[r, c]])
    with pytest.raises(ValueError, match="96"):
        build_patch_mosaic(rng.integers(0, 255, (1, 50, 50, 3), dtype=np.uint8), [1], np.zeros((1, 1), int))


def test_slide_smaller_than_one_tile_gives_empty_grid() -> None:
    from wsi_pipeline.inference import plan_blocks

    grid = TileGrid(100, 100, slide_mpp=0.5)  # a 96-px tile at 0.972 um/px needs 187 level-0 px
    tiles = grid.tiles()
    assert grid.shape == (0, 0) and len(tiles) == 0 and len(grid) == 0
    assert plan_blocks(np.column_stack([tiles.rows, tiles.cols]), 4) == []
    tm = TissueMask(np.ones((10, 10), bool), 10.0, 10.0, (100, 100))
    assert tm.tile_fractions(tiles.x, tiles.y, grid.tile_size0, grid.tile_size0).shape == (0,)


def test_plan_grid_picks_the_level_and_refuses_implausible_slides() -> None:
    from wsi_pipeline.slide import SlideInfo
    from wsi_pipeline.tiling import plan_grid

    slide = SlideInfo(Path("x.svs"), "test", (8000, 6000), (1.0, 4.0, 16.0), 0.25, "metadata")
    grid = plan_grid(slide, 96, 0.972, stride=48)  # 3.9 level-0 px per model px: level 1 (4x) is too coarse
    assert (grid.level, grid.level_downsample, grid.stride) == (0, 1.0, 48)
    assert plan_grid(dataclasses.replace(slide, mpp=0.2), 96, 0.972).level == 1  # 4.86 px per model px
    coarse = SlideInfo(Path("thumb.tif"), "test", (8000, 6000), (1.0,), 352.0, "metadata")
    with pytest.raises(
        UnknownMppError, match=r"thumb\.tif: 352 um/px \(from the metadata\) is implausibly coarse"
    ):
        plan_grid(coarse, 96, 0.972)
    tiny = SlideInfo(Path("tiny.tif"), "test", (100, 100), (1.0,), 0.5, "option")
    with pytest.raises(
        NoTissueError, match=r"tiny\.tif: slide \(100x100 px at 0.5 um/px\) is smaller than one 96"
    ):
        plan_grid(tiny, 96, 0.972)


def test_edge_tiles_are_judged_by_their_part_inside_the_slide() -> None:
    from wsi_pipeline.slide import SlideInfo
    from wsi_pipeline.stages import select_tissue_cells

    # 1000 x 400 px at 0.5 um/px, 192 px tiles: columns start at 0, 192, ..., 960 (40 px inside)
    grid = TileGrid(1000, 400, slide_mpp=0.5, patch_size=96, model_mpp=1.0)
    assert grid.shape == (3, 6)
    slide = SlideInfo(Path("e.tif"), "test", (1000, 400), (1.0,), 0.5, "metadata")
    mask = np.zeros((50, 125), bool)  # 8 level-0 px per mask px
    mask[:, 120:] = True  # tissue only in the last 40 px, along the right edge
    tm = TissueMask(mask, 8.0, 8.0, (1000, 400))
    kept = select_tissue_cells(slide, grid, tm, 0.25)
    assert sorted(map(tuple, kept.tolist())) == [(0, 5), (1, 5), (2, 5)]  # 40 px of 192 would be 0.21
    x, y = grid.cell_origin(0, 5)
    assert tm.fraction_in(x, y, grid.tile_size0, grid.tile_size0) == pytest.approx(40 / 192, abs=0.03)
    mask[:, 120:] = False
    mask[:, 100:120] = True  # tissue just left of the last column: the edge tiles show glass only
    assert 5 not in select_tissue_cells(slide, grid, TissueMask(mask, 8.0, 8.0, (1000, 400)), 0.25)[:, 1]
