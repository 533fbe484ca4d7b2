"""Tile grid geometry, selection by tissue fraction, block reads and the mosaic truth layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.errors import OptionError
from wsi_pipeline.slide import open_slide, read_region_at_mpp
from wsi_pipeline.testing import PATCH, build_patch_mosaic, gradient_image, write_pyramidal_tiff
from wsi_pipeline.tiling import TileGrid
from wsi_pipeline.tissue import TissueMask


def test_grid_counts_only_tiles_fully_inside() -> None:
    # model 1.0 um/px on a 0.5 um/px slide: a 96-px tile spans 192 level-0 px
    for width, cols in [(960, 5), (959, 4), (1000, 5), (191, 0), (192, 1)]:
        grid = TileGrid(width, 500, slide_mpp=0.5, patch_size=96, model_mpp=1.0)
        assert grid.tile_size0 == 192 and grid.stride0 == 192
        assert grid.shape == (2, cols)
    overlapping = TileGrid(1000, 500, slide_mpp=0.5, patch_size=96, model_mpp=1.0, stride=32)
    assert overlapping.stride0 == 64
    assert overlapping.shape == ((500 - 192) // 64 + 1, (1000 - 192) // 64 + 1)


def test_tiles_positions_match_cell_origin_and_stay_inside() -> None:
    grid = TileGrid(2220, 2967, slide_mpp=0.499, stride=32)
    tiles = grid.tiles()
    rows, cols = grid.shape
    assert len(tiles) == rows * cols == len(grid)
    assert (tiles.x + grid.tile_size0 <= 2220 + 1e-6).all() and (
        tiles.y + grid.tile_size0 <= 2967 + 1e-6
    ).all()
    # one more column/row would leave the slide
    assert grid.cell_origin(0, cols)[0] + grid.tile_size0 > 2220
    assert grid.cell_origin(rows, 0)[1] + grid.tile_size0 > 2967
    for k in (0, 17, len(tiles) - 1):
        assert grid.cell_origin(tiles.rows[k], tiles.cols[k]) == pytest.approx((tiles.x[k], tiles.y[k]))
    assert tiles.x[1] - tiles.x[0] == pytest.approx(32 * 0.972 / 0.499)


def test_label_boxes_tile_the_plane_when_stride_is_label_size() -> None:
    grid = TileGrid(4000, 4000, slide_mpp=0.25, stride=32)
    x, y, w, h = grid.cell_label_box(3, 5)
    x_next, _, _, _ = grid.cell_label_box(3, 6)
    assert x_next == pytest.approx(x + w)
    assert w == pytest.approx(32 * 0.972 / 0.25)
    tile_x, tile_y = grid.cell_origin(3, 5)
    assert x - tile_x == pytest.approx(32 * 0.972 / 0.25)  # (96 - 32) / 2 model px
    attrs = grid.attrs()
    assert attrs["grid_shape"] == list(grid.shape) and attrs["stride"] == 32
    assert attrs["label_offset_level0"] == pytest.approx(x - tile_x)


def test_select_by_tissue_fraction() -> None:
    grid = TileGrid(1536, 768, slide_mpp=1.0, patch_size=96, model_mpp=1.0)  # 8 x 16 tiles of 96 px
    mask = np.zeros((48, 96), bool)  # 16 level-0 px per mask px
    mask[:, :48] = True  # left half is tissue
    tm = TissueMask(mask, 16.0, 16.0, (1536, 768))
    tiles = grid.tiles()
    fractions = tm.tile_fractions(tiles.x, tiles.y, grid.tile_size0, grid.tile_size0)
    kept = tiles.select(fractions >= 0.25)
    assert len(kept) == 8 * 8
    assert set(kept.cols.tolist()) == set(range(8))
    assert np.array_equal(kept.x, kept.cols * 96.0)


def test_invalid_geometry_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="slide mpp"):
        TileGrid(100, 100, slide_mpp=0.0)
    with pytest.raises(OptionError, match="stride"):
        TileGrid(100, 100, slide_mpp=0.5, stride=-3)
    with pytest.raises(OptionError, match="stride"):
        TileGrid(100, 100, slide_mpp=0.5, stride=2.5)


def test_block_tiles_equal_single_tile_reads(tmp_path: Path) -> None:
    path = write_pyramidal_tiff(tmp_path / "g.tif", gradient_image(1200, 1400), 0.25, levels=3)
    with open_slide(path) as reader:
        grid = TileGrid(*reader.dimensions, slide_mpp=0.25, stride=48)
        blocks = list(grid.iter_blocks(3))
        assert sum((b.r1 - b.r0) * (b.c1 - b.c0) for b in blocks) == len(grid)
        block = blocks[1]
        image = read_region_at_mpp(
            reader, block.x0, block.y0, block.width0, block.height0, block.out_w, block.out_h
        )
        assert image.shape == (block.out_h, block.out_w, 3) == (48 * 2 + 96, 48 * 2 + 96, 3)
        rows, cols = np.meshgrid(np.arange(block.r0, block.r1), np.arange(block.c0, block.c1), indexing="ij")
        cut = block.extract(image, rows.ravel(), cols.ravel())
        for k, (r, c) in enumerate(zip(rows.ravel(), cols.ravel(), strict=True)):
            x, y = grid.cell_origin(r, c)
            single = read_region_at_mpp(reader, x, y, grid.tile_size0, grid.tile_size0, 96, 96)
            assert np.abs(cut[k].astype(int) - single).max() <= 1


def test_iter_blocks_skips_unselected_and_shrinks() -> None:
    grid = TileGrid(960, 960, slide_mpp=1.0, patch_size=96, model_mpp=1.0)  # 10 x 10
    selected = np.zeros(grid.shape, bool)
    selected[2, 3] = selected[4, 4] = True
    blocks = list(grid.iter_blocks(5, selected))
    assert [(b.r0, b.c0, b.r1, b.c1) for b in blocks] == [(2, 3, 5, 5)]
    assert blocks[0].x0 == 3 * 96 and blocks[0].out_w == 96 * 2


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
    grid = TileGrid(100, 100, slide_mpp=0.5)  # a 96-px tile at 0.972 um/px needs 187 level-0 px
    tiles = grid.tiles()
    assert grid.shape == (0, 0) and len(tiles) == 0 and len(grid) == 0
    assert list(grid.iter_blocks(4)) == []
    tm = TissueMask(np.ones((10, 10), bool), 10.0, 10.0, (100, 100))
    assert tm.tile_fractions(tiles.x, tiles.y, grid.tile_size0, grid.tile_size0).shape == (0,)
