"""Heatmap geometry: cells, regions, sizes, categories (the decision rule: test_lesions.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_pipeline.aggregation import (
    CATEGORY_ITC,
    CATEGORY_MACRO,
    CATEGORY_MICRO,
    CATEGORY_NONE,
    build_heatmap,
    categorise,
    label_regions,
    max_feret_cells,
)


def _tissue(rows: int = 20, cols: int = 20, value: float = 0.0) -> np.ndarray:
    return np.full((rows, cols), value, dtype=np.float32)


def test_build_heatmap_places_values_and_nan_elsewhere():
    hm = build_heatmap((3, 4), np.array([[0, 1], [2, 3]]), np.array([0.25, 0.75]))
    assert hm.dtype == np.float32 and hm.shape == (3, 4)
    assert hm[0, 1] == 0.25 and hm[2, 3] == 0.75
    assert np.isnan(hm).sum() == 10


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
