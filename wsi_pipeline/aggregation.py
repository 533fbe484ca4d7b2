"""Stage 5 of the slide path, its types and geometry: the heatmap, lesion regions, their sizes, the
pN-style category and the :class:`SlideAggregate` hand-off. The decision rule that fills it (which
regions are lesions, the slide score) is :mod:`wsi_pipeline.lesions`.

Conventions: heatmap cell ``(row, col)`` holds the probability of grid tile ``(row, col)``;
its footprint on the slide is the ``stride``-sized square centred on that tile, so cells tile
the plane without overlap (with stride = tile size the footprint is the tile itself). Cells
without tissue are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

#: Size thresholds (mm, largest dimension) of the pN categories for lymph-node metastases.
ITC_MAX_MM = 0.2
MICRO_MAX_MM = 2.0

CATEGORY_NONE = "none"
CATEGORY_ITC = "isolated tumour cells"
CATEGORY_MICRO = "micrometastasis"
CATEGORY_MACRO = "macrometastasis"


def build_heatmap(shape: tuple[int, int], cells: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """float32 ``shape`` array: ``probs`` at ``cells`` (row, col), NaN elsewhere."""
    heatmap = np.full(shape, np.nan, dtype=np.float32)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    heatmap[cells[:, 0], cells[:, 1]] = np.asarray(probs, dtype=np.float32)
    return heatmap


def label_regions(heatmap: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """8-connected components of tissue cells with probability >= ``threshold``."""
    mask = np.nan_to_num(heatmap, nan=-1.0) >= threshold
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    return labels, int(count)


def max_feret_cells(cells: np.ndarray) -> float:
    """Longest diameter (max Feret) of the union of unit squares at ``cells`` (row, col), in cells.

    Computed exactly from the convex hull of the squares' corners (one cell: sqrt(2)).
    """
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 2)
    if len(cells) == 0:
        return 0.0
    corners = (cells[:, None, :] + np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)).reshape(
        -1, 2
    )
    corners = np.unique(corners, axis=0)
    try:
        points = corners[ConvexHull(corners).vertices]
    except QhullError:  # collinear corners cannot happen for squares, but stay safe
        points = corners
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def categorise(largest_mm: float) -> str:
    """pN-style category from the longest diameter (mm) of the largest tumour region."""
    if not largest_mm or largest_mm <= 0:
        return CATEGORY_NONE
    if largest_mm < ITC_MAX_MM:
        return CATEGORY_ITC
    if largest_mm <= MICRO_MAX_MM:
        return CATEGORY_MICRO
    return CATEGORY_MACRO


CATEGORIES = (CATEGORY_NONE, CATEGORY_ITC, CATEGORY_MICRO, CATEGORY_MACRO)


@dataclass(frozen=True)
class TumourRegion:
    """One lesion kept by the decision rule; sizes in mm, cells as (row, col) grid indices,
    ``confidence`` the rule's region confidence (see :mod:`wsi_pipeline.lesions`)."""

    label: int
    cells: np.ndarray
    area_mm2: float
    max_diameter_mm: float
    mean_prob: float
    max_prob: float
    confidence: float = float("nan")
    #: (row, col) of the region's most confident cell (its first cell when not given).
    peak_cell: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.peak_cell is None and len(self.cells):
            object.__setattr__(self, "peak_cell", (int(self.cells[0, 0]), int(self.cells[0, 1])))


@dataclass(frozen=True)
class SlideAggregate:
    """Stage 5 of the slide path: slide-level numbers derived from the heatmap (all sizes use the
    cell footprint). Validates itself on construction, including the rule's invariant: the category
    is ``none`` exactly when no region was kept."""

    slide_score: float
    score_method: str
    n_tissue_cells: int
    tumor_threshold: float
    tumor_area_mm2: float
    largest_tumor_region_mm: float
    category: str
    regions: tuple[TumourRegion, ...] = ()
    n_candidate_regions: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))
        if (self.category == CATEGORY_NONE) != (not self.regions):
            raise ValueError(f"category {self.category!r} with {len(self.regions)} kept region(s)")
        if not (math.isnan(self.slide_score) or 0.0 <= self.slide_score <= 1.0):
            raise ValueError(f"slide score must be in [0, 1] (or NaN without tissue), got {self.slide_score}")
        if not 0.0 <= self.tumor_threshold <= 1.0:
            raise ValueError(f"tumour threshold must be in [0, 1], got {self.tumor_threshold}")
        if self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {self.category!r}")
        if min(self.n_tissue_cells, self.tumor_area_mm2, self.largest_tumor_region_mm) < 0:
            raise ValueError("tissue cell count and tumour sizes must not be negative")

    @property
    def n_tumor_regions(self) -> int:
        return len(self.regions)
