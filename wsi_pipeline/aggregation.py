"""Stage 5 of the slide path: from tile probabilities to a heatmap, a slide score, tumour regions and
a category (:class:`SlideAggregate`).

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

SCORE_METHOD = (
    "max over tissue cells of the tumour probability averaged over the tissue cells of a "
    "(2*round(tile/stride)+1)-cell square window centred on each cell (3x3 at stride = tile size)"
)


def build_heatmap(shape: tuple[int, int], cells: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """float32 ``shape`` array: ``probs`` at ``cells`` (row, col), NaN elsewhere."""
    heatmap = np.full(shape, np.nan, dtype=np.float32)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    heatmap[cells[:, 0], cells[:, 1]] = np.asarray(probs, dtype=np.float32)
    return heatmap


def smoothing_window(tile_px: int, stride_px: int) -> int:
    """Odd window side (cells) spanning about three tiles whatever the stride."""
    return 2 * max(1, round(tile_px / stride_px)) + 1


def smoothed(heatmap: np.ndarray, window: int) -> np.ndarray:
    """NaN-aware box mean: each tissue cell becomes the mean of the tissue cells in its window."""
    valid = ~np.isnan(heatmap)
    values = np.where(valid, heatmap, 0.0).astype(np.float64)
    total = ndimage.uniform_filter(values, size=window, mode="constant", cval=0.0)
    count = ndimage.uniform_filter(valid.astype(np.float64), size=window, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    out[~valid] = np.nan
    return out.astype(np.float32)


def slide_score(heatmap: np.ndarray, window: int = 3) -> float:
    """Max of the :func:`smoothed` heatmap over tissue, in [0, 1]; NaN when there is no tissue.

    One isolated false-positive tile among normal tissue contributes at most ``1 / window**2``;
    a tumour region of at least ``window x window`` cells scores its own probability.
    """
    if not np.isfinite(heatmap).any():
        return float("nan")
    value = float(np.nanmax(smoothed(heatmap, window)))
    return min(1.0, max(0.0, value))


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
    """One connected tumour region; sizes in mm, cells as (row, col) grid indices."""

    label: int
    cells: np.ndarray
    area_mm2: float
    max_diameter_mm: float
    mean_prob: float
    max_prob: float


@dataclass(frozen=True)
class SlideAggregate:
    """Stage 5 of the slide path: slide-level numbers derived from the heatmap (all sizes use the
    cell footprint). Validates itself on construction."""

    slide_score: float
    score_method: str
    n_tissue_cells: int
    tumor_threshold: float
    tumor_area_mm2: float
    largest_tumor_region_mm: float
    category: str
    regions: tuple[TumourRegion, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))
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


def aggregate(heatmap: np.ndarray, cell_um: float, tumor_threshold: float, window: int = 3) -> SlideAggregate:
    """Score, regions, area, size and category for one heatmap whose cells are ``cell_um`` wide."""
    labels, count = label_regions(heatmap, tumor_threshold)
    cell_mm = cell_um / 1000.0
    regions: list[TumourRegion] = []
    if count:
        for label, where in enumerate(ndimage.find_objects(labels), start=1):
            assert where is not None
            local = np.argwhere(labels[where] == label)
            cells = local + np.array([where[0].start, where[1].start])
            values = heatmap[cells[:, 0], cells[:, 1]]
            regions.append(
                TumourRegion(
                    label=label,
                    cells=cells,
                    area_mm2=float(len(cells) * cell_mm**2),
                    max_diameter_mm=max_feret_cells(cells) * cell_mm,
                    mean_prob=float(values.mean()),
                    max_prob=float(values.max()),
                )
            )
    largest = max(regions, key=lambda r: (len(r.cells), r.max_diameter_mm), default=None)
    largest_mm = largest.max_diameter_mm if largest else 0.0
    return SlideAggregate(
        slide_score=slide_score(heatmap, window),
        score_method=SCORE_METHOD,
        n_tissue_cells=int(np.isfinite(heatmap).sum()),
        tumor_threshold=float(tumor_threshold),
        tumor_area_mm2=float(sum(r.area_mm2 for r in regions)),
        largest_tumor_region_mm=float(largest_mm),
        category=categorise(largest_mm),
        regions=tuple(regions),
    )
