"""Stage 3 of the slide path, and the one home of slide geometry: the grid of model-resolution tiles
over a slide in level-0 coordinates, the pyramid level reads come from, heatmap cells and blocks.

A model sees ``patch_size`` px tiles at ``model_mpp`` um/px. On a slide of ``slide_mpp`` um/px one
model pixel spans ``scale = model_mpp / slide_mpp`` level-0 px, so a tile spans
``tile_size0 = patch_size * scale`` and neighbouring tiles are ``stride0 = stride * scale`` apart.
Reads come from the deepest pyramid level whose downsample does not exceed ``scale`` (``level``).

Heatmap geometry: heatmap cell ``(r, c)`` holds the prediction for the tile whose top-left
corner is ``(origin_x + c * stride0, origin_y + r * stride0)`` (level-0, fractional allowed). Its
footprint (:class:`CellGeometry`) is the ``stride0``-sized square centred on that tile, so cells tile
the plane without overlap (with stride = tile size the footprint is the tile itself; with stride =
32 model px, the PCam label square). The grid covers the whole slide: it holds every cell whose
footprint starts inside the slide, so the last column and row of tiles may overhang the right and
bottom edges (their pixels beyond the slide read as white background, see
:func:`~wsi_pipeline.slide.regions.read_region_at_mpp`). A slide smaller than one tile has an empty grid.
:meth:`TileGrid.describe` is the one description of all this that outputs record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import TypeVar

import numpy as np

from wsi_pipeline.errors import NoTissueError, OptionError, UnknownMppError
from wsi_pipeline.pcam import PCAM_MPP, PCAM_PATCH
from wsi_pipeline.slide.base import best_level
from wsi_pipeline.slide.info import SlideInfo, check_mpp

Coord = TypeVar("Coord", float, np.ndarray)  # a cell coordinate: a number, or an array of them

#: Slides more than this many times coarser than the model (level-0 px per model px below it) are
#: refused: their um/px is almost certainly wrong (e.g. a thumbnail-resolution TIFF tag).
MIN_SCALE = 0.25

_EPS = 1e-9


@dataclass(frozen=True)
class Tiles:
    """A set of grid cells: row/col indices and level-0 top-left corners (float)."""

    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    tile_size0: float

    def __len__(self) -> int:
        return int(self.rows.size)


@dataclass(frozen=True)
class CellGeometry:
    """Where heatmap cells lie on the slide (level-0 px): cell ``(r, c)`` covers
    ``[x0 + c*size, x0 + (c+1)*size) x [y0 + r*size, y0 + (r+1)*size)``."""

    origin_x: float
    origin_y: float
    size: float

    def edges(self, n: int, axis: int) -> np.ndarray:
        """The ``n + 1`` level-0 edges of ``n`` cells along ``axis`` (0: rows/y, 1: columns/x)."""
        start = self.origin_x if axis == 1 else self.origin_y
        return start + np.arange(n + 1, dtype=np.float64) * self.size


@dataclass(frozen=True)
class Block:
    """A rectangle of grid cells ``rows [row0, row0 + n_rows) x cols [col0, col0 + n_cols)`` read as one
    image, and which entries (``index``) of the caller's cell array it serves."""

    row0: int
    col0: int
    n_rows: int
    n_cols: int
    index: np.ndarray


@dataclass(frozen=True)
class BlockRegion:
    """What to read for a block: level-0 rectangle ``(x0, y0, width0, height0)`` as ``out_w x out_h``
    model pixels (``read_region_at_mpp(reader, x0, y0, width0, height0, out_w, out_h)``)."""

    x0: float
    y0: float
    width0: float
    height0: float
    out_w: int
    out_h: int


@dataclass(frozen=True)
class GridDescription:
    """The geometry outputs record (summary.json ``tiles``/``heatmap``, Zarr attributes), from
    :meth:`TileGrid.describe`. Sizes are model px or level-0 px as named; points are ``(x, y)``."""

    shape: tuple[int, int]
    tile_size_model_px: int
    tile_size_level0_px: float
    stride_model_px: int
    stride_level0_px: float
    model_mpp: float
    origin_level0: tuple[float, float]
    cell_size_um: float
    cell_size_level0_px: float
    cell_origin_level0: tuple[float, float]
    level: int
    level_downsample: float

    def __post_init__(self) -> None:
        sizes = (self.tile_size_level0_px, self.stride_level0_px, self.cell_size_um, self.cell_size_level0_px)
        positive = (
            *sizes,
            self.tile_size_model_px,
            self.stride_model_px,
            self.model_mpp,
            self.level_downsample,
        )
        if len(self.shape) != 2 or min(self.shape) < 0 or self.level < 0 or not all(v > 0 for v in positive):
            raise ValueError(f"grid description: shape, level >= 0 and sizes > 0 expected, got {self}")


def check_stride(stride: int | None, patch_size: int) -> None:
    """A stride up to the tile size: a larger one leaves gaps between tiles that the heatmap cells
    (stride-sized footprints) would still claim, so regions would reach where no tile looked."""
    if stride is not None and stride > patch_size:
        raise OptionError(
            f"--stride {stride} is larger than the model's {patch_size} px tile; tiles would leave "
            f"gaps (use at most {patch_size})"
        )


@dataclass(frozen=True)
class TileGrid:
    """Regular grid of model tiles over a slide and the pyramid level to read them from (see the
    module docstring for the geometry). Validates itself on construction."""

    slide_width: int
    slide_height: int
    slide_mpp: float
    patch_size: int = PCAM_PATCH
    model_mpp: float = PCAM_MPP
    stride: int | None = None  # model px; None = patch_size (non-overlapping tiles)
    origin_x: float = 0.0
    origin_y: float = 0.0
    level: int = 0  # pyramid level the reads come from
    level_downsample: float = 1.0  # its downsample (level-0 px per level px)

    def __post_init__(self) -> None:
        stride = self.patch_size if self.stride is None else self.stride
        object.__setattr__(self, "stride", stride)
        check_mpp(self.slide_mpp, "slide mpp")
        check_mpp(self.model_mpp, "model mpp")
        for name, value in (("patch size", self.patch_size), ("stride", stride)):
            if not (isinstance(value, Real) and value > 0 and math.isfinite(value)):
                raise OptionError(f"{name} must be a positive number, got {value!r}")
        if int(stride) != stride:
            raise OptionError(f"stride must be a whole number of model pixels, got {stride!r}")
        check_stride(int(stride), int(self.patch_size))
        if self.level < 0 or not self.level_downsample > 0:
            raise ValueError(f"level must be >= 0 with a positive downsample, got {self.level}")

    # -- geometry ------------------------------------------------------------
    @property
    def scale(self) -> float:
        """Level-0 px per model px."""
        return self.model_mpp / self.slide_mpp

    @property
    def tile_size0(self) -> float:
        return self.patch_size * self.scale

    @property
    def stride_px(self) -> int:
        """The stride in model px (always set)."""
        return int(self.stride or self.patch_size)

    @property
    def stride0(self) -> float:
        return self.stride_px * self.scale

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols): every cell whose footprint starts inside the slide (edge tiles overhang)."""
        return (
            _count(self.slide_height - self.origin_y, self.tile_size0, self.stride0),
            _count(self.slide_width - self.origin_x, self.tile_size0, self.stride0),
        )

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def cell_origin(self, row: Coord, col: Coord) -> tuple[Coord, Coord]:
        """Level-0 top-left of the tile of heatmap cell (row, col)."""
        return (self.origin_x + col * self.stride0, self.origin_y + row * self.stride0)

    def tiles(self) -> Tiles:
        """All cells of the grid in row-major order."""
        rows, cols = self.shape
        rr, cc = (a.ravel() for a in np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"))
        x, y = self.cell_origin(rr, cc)
        return Tiles(rr, cc, np.asarray(x, np.float64), np.asarray(y, np.float64), self.tile_size0)

    def tile_boxes(self, cells: np.ndarray) -> np.ndarray:
        """Level-0 ``(minx, miny, width, height)`` of the tiles of ``cells`` (row, col)."""
        x, y = self.cell_origin(cells[:, 0].astype(np.float64), cells[:, 1].astype(np.float64))
        size = np.full(len(cells), self.tile_size0)
        return np.column_stack([x, y, size, size])

    # -- heatmap cells -----------------------------------------------------------
    @property
    def cell_size0(self) -> float:
        """Side of a heatmap cell's footprint, level-0 px (the stride)."""
        return float(self.stride0)

    @property
    def cell_um(self) -> float:
        return self.cell_size0 * float(self.slide_mpp)

    def cell_geometry(self) -> CellGeometry:
        """Cell footprints: stride-sized squares centred on their tiles (= the tile at stride = patch)."""
        inset = (self.tile_size0 - self.stride0) / 2.0
        return CellGeometry(self.origin_x + inset, self.origin_y + inset, self.cell_size0)

    # -- block reads -----------------------------------------------------------
    def block_region(self, row0: int, col0: int, n_rows: int, n_cols: int) -> BlockRegion:
        """What to read for cells ``rows [row0, row0 + n_rows) x cols [col0, col0 + n_cols)`` as one
        model-resolution image; the tile of cell (r, c) is then
        ``image[(r - row0) * stride :][:patch, (c - col0) * stride :][:, :patch]``."""
        if n_rows < 1 or n_cols < 1:
            raise ValueError(f"empty block of {n_rows} x {n_cols} cells at ({row0}, {col0})")
        out_w = (n_cols - 1) * self.stride_px + self.patch_size
        out_h = (n_rows - 1) * self.stride_px + self.patch_size
        x0, y0 = self.cell_origin(row0, col0)
        return BlockRegion(x0, y0, out_w * self.scale, out_h * self.scale, out_w, out_h)

    def describe(self) -> GridDescription:
        """The geometry that summary.json and the heatmap's Zarr attributes record."""
        geometry = self.cell_geometry()
        return GridDescription(
            shape=self.shape,
            tile_size_model_px=int(self.patch_size),
            tile_size_level0_px=float(self.tile_size0),
            stride_model_px=self.stride_px,
            stride_level0_px=float(self.stride0),
            model_mpp=float(self.model_mpp),
            origin_level0=(float(self.origin_x), float(self.origin_y)),
            cell_size_um=self.cell_um,
            cell_size_level0_px=self.cell_size0,
            cell_origin_level0=(geometry.origin_x, geometry.origin_y),
            level=int(self.level),
            level_downsample=float(self.level_downsample),
        )


def plan_grid(slide: SlideInfo, patch_size: int, model_mpp: float, stride: int | None = None) -> TileGrid:
    """The grid of ``patch_size`` px tiles at ``model_mpp`` um/px over ``slide`` and the level reads
    use. :class:`UnknownMppError` when the slide's um/px is implausibly coarse for the model,
    :class:`NoTissueError` when not even one tile fits."""
    patch = int(patch_size)
    width, height = slide.dimensions
    level = best_level(slide.level_downsamples, float(model_mpp) / slide.mpp)
    grid = TileGrid(
        slide_width=width,
        slide_height=height,
        slide_mpp=slide.mpp,
        patch_size=patch,
        model_mpp=float(model_mpp),
        stride=int(stride) if stride else patch,
        level=level,
        level_downsample=slide.level_downsamples[level],
    )
    if grid.scale < MIN_SCALE:
        source = "--mpp" if slide.mpp_source == "option" else "from the metadata"
        raise UnknownMppError(
            f"{slide.shown_path}: {slide.mpp:g} um/px ({source}) is implausibly coarse for a "
            f"{grid.model_mpp:g} um/px model (a {patch} px tile would span "
            f"{grid.tile_size0:.2f} slide px); give the right value with --mpp"
        )
    if len(grid) == 0:
        raise NoTissueError(
            f"{slide.shown_path}: slide ({width}x{height} px at {slide.mpp:g} um/px) "
            f"is smaller than one {patch} px tile at {grid.model_mpp:g} um/px"
        )
    return grid


def _count(extent: float, tile: float, stride: float) -> int:
    """Cells along one axis: none when the slide is smaller than one tile, else every cell whose
    footprint (``stride`` wide, centred on its tile) starts inside the slide."""
    if extent + _EPS * max(1.0, tile) < tile:
        return 0
    inset = (tile - stride) / 2.0
    return max(1, int(math.ceil((extent - inset) / stride - _EPS)))
