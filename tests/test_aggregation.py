"""Heatmap aggregation: score, regions, sizes, categories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_pipeline.aggregation import (
    CATEGORY_ITC,
    CATEGORY_MACRO,
    CATEGORY_MICRO,
    CATEGORY_NONE,
    aggregate,
    build_heatmap,
    categorise,
    label_regions,
    max_feret_cells,
    slide_score,
    smoothed,
    smoothing_window,
)


def _tissue(rows: int = 20, cols: int = 20, value: float = 0.0) -> np.ndarray:
    return np.full((rows, cols), value, dtype=np.float32)


def test_build_heatmap_places_values_and_nan_elsewhere():
    hm = build_heatmap((3, 4), np.array([[0, 1], [2, 3]]), np.array([0.25, 0.75]))
    assert hm.dtype == np.float32 and hm.shape == (3, 4)
    assert hm[0, 1] == 0.25 and hm[2, 3] == 0.75
    assert np.isnan(hm).sum() == 10


def test_smoothing_ignores_nan_cells():
    hm = np.array([[1.0, np.nan], [0.0, np.nan]], dtype=np.float32)
    out = smoothed(hm, 3)
    assert out[0, 0] == pytest.approx(0.5) and out[1, 0] == pytest.approx(0.5)
    assert np.isnan(out[0, 1]) and np.isnan(out[1, 1])


def test_smoothing_window_spans_about_three_tiles():
    assert smoothing_window(96, 96) == 3
    assert smoothing_window(96, 48) == 5
    assert smoothing_window(96, 200) == 3


def test_single_false_positive_tile_is_damped_but_a_region_scores_high():
    hm = _tissue()
    hm[10, 10] = 1.0
    assert slide_score(hm) == pytest.approx(1 / 9, abs=1e-6)
    hm[5:8, 2:5] = 0.9
    assert slide_score(hm) == pytest.approx(0.9, abs=1e-6)


def test_score_is_nan_without_tissue_and_in_unit_interval():
    assert math.isnan(slide_score(np.full((4, 4), np.nan, dtype=np.float32)))
    rng = np.random.default_rng(0)
    hm = rng.random((30, 30)).astype(np.float32)
    hm[rng.random((30, 30)) < 0.3] = np.nan
    assert 0.0 <= slide_score(hm) <= 1.0


def test_regions_are_8_connected_and_exclude_nan():
    hm = _tissue(6, 6)
    hm[0, 0] = hm[1, 1] = 0.8  # diagonal neighbours: one region
    hm[4, 4] = 0.5  # exactly at threshold counts
    hm[4, 0] = np.nan
    labels, count = label_regions(hm, 0.5)
    assert count == 2
    assert labels[0, 0] == labels[1, 1] != labels[4, 4]


def test_max_feret_of_squares():
    assert max_feret_cells(np.array([[0, 0]])) == pytest.approx(math.sqrt(2))
    assert max_feret_cells(np.array([[0, c] for c in range(5)])) == pytest.approx(math.sqrt(26))
    block = np.argwhere(np.ones((3, 4), dtype=bool))
    assert max_feret_cells(block) == pytest.approx(5.0)
    assert max_feret_cells(np.zeros((0, 2))) == 0.0


@pytest.mark.parametrize(
    ("mm", "category"),
    [
        (0.0, CATEGORY_NONE),
        (0.1, CATEGORY_ITC),
        (0.19, CATEGORY_ITC),
        (0.2, CATEGORY_MICRO),
        (2.0, CATEGORY_MICRO),
        (2.01, CATEGORY_MACRO),
    ],
)
def test_categories(mm, category):
    assert categorise(mm) == category


def test_aggregate_measures_the_largest_region_in_mm():
    cell_um = 100.0
    hm = _tissue(40, 40)
    hm[2:5, 2:6] = 0.9  # 3 x 4 cells = 0.3 mm x 0.4 mm -> diameter 0.5 mm, area 0.12 mm2
    hm[20, 20] = 0.7  # single cell: 0.1 * sqrt(2) mm
    agg = aggregate(hm, cell_um, tumor_threshold=0.5)
    assert len(agg.regions) == 2
    assert agg.tumor_area_mm2 == pytest.approx(0.12 + 0.01)
    assert agg.largest_tumor_region_mm == pytest.approx(0.5)
    assert agg.category == CATEGORY_MICRO
    assert agg.slide_score == pytest.approx(0.9)
    assert agg.n_tissue_cells == 1600
    big = max(agg.regions, key=lambda r: len(r.cells))
    assert big.mean_prob == pytest.approx(0.9) and len(big.cells) == 12


def test_aggregate_macro_and_none():
    hm = _tissue(60, 60)
    hm[10:40, 10:15] = 0.95  # 30 cells of 100 um -> 3 mm long
    assert aggregate(hm, 100.0, 0.5).category == CATEGORY_MACRO
    clean = aggregate(_tissue(10, 10, 0.1), 100.0, 0.5)
    assert (
        clean.category == CATEGORY_NONE
        and clean.tumor_area_mm2 == 0.0
        and clean.largest_tumor_region_mm == 0.0
    )
    assert clean.regions == ()
