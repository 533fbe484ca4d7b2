"""What the review view shows: one frozen, plain-typed hand-off object per slide.

Everything is in level-0 pixels of the slide (x right, y down) so that the slide tiles, the
heatmap and the lesion outlines line up without any knowledge of how they were computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from wsi_pipeline.aggregation import CATEGORY_NONE

Point = tuple[float, float]
Ring = tuple[Point, ...]


def _finite(name: str, value: float, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a {'positive' if positive else 'finite'} number, got {value!r}")
    return value


def call_text(category: object, largest_mm: object) -> str:
    """The slide-level call as the page shows it, e.g. ``micrometastasis (1.27 mm)``."""
    if not category:
        return ""
    if category == CATEGORY_NONE:
        return "no metastasis found"
    return f"{category} ({largest_mm:.2f} mm)" if isinstance(largest_mm, (int, float)) else str(category)


def _rings(rings: Sequence[Sequence[Sequence[float]]]) -> tuple[Ring, ...]:
    out = []
    for ring in rings:
        points = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3 or not np.isfinite(points).all():
            raise ValueError(f"a lesion ring needs >= 3 finite (x, y) points, got {len(points)}")
        out.append(tuple((float(x), float(y)) for x, y in points))
    if not out:
        raise ValueError("a lesion needs at least one polygon ring")
    return tuple(out)


@dataclass(frozen=True)
class Lesion:
    """One tumour region.

    ``rings`` are closed polygon rings in level-0 px: outer boundaries and holes alike (drawn with
    the even-odd rule, so a MultiPolygon with holes is just all its rings). ``confidence`` is in
    [0, 1] (the mean tumour probability of the region, for the pipeline's regions).
    """

    rings: tuple[Ring, ...]
    max_diameter_mm: float
    area_mm2: float
    confidence: float
    category: str
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rings", _rings(self.rings))
        object.__setattr__(self, "max_diameter_mm", _finite("max_diameter_mm", self.max_diameter_mm))
        object.__setattr__(self, "area_mm2", _finite("area_mm2", self.area_mm2))
        confidence = _finite("confidence", self.confidence)
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        object.__setattr__(self, "confidence", confidence)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min x, min y, max x, max y) in level-0 px."""
        points = np.concatenate([np.asarray(ring) for ring in self.rings])
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


@dataclass(frozen=True, eq=False)
class ViewerData:
    """Everything ``viewer.html`` shows for one slide (see :func:`~wsi_pipeline.viewer.write_viewer`).

    * ``size``: level-0 (width, height) in px; ``mpp``: level-0 micrometres per pixel.
    * ``heatmap``: 2-D float32 tumour probability, NaN = not analysed (no tissue); cell ``(r, c)``
      covers ``[x0 + c*s, x0 + (c+1)*s) x [y0 + r*s, y0 + (r+1)*s)`` with ``(x0, y0) =
      heatmap_origin`` and ``s = heatmap_cell_px`` (level-0 px). ``None``: no heatmap layer.
    * ``call`` / ``score``: the slide-level call as text (e.g. "micrometastasis") and its score.
    * ``notes``: extra (label, value) lines for the information panel (model, tissue analysed, ...).
    """

    slide_name: str
    size: tuple[int, int]
    mpp: float
    heatmap: np.ndarray | None = None
    heatmap_origin: tuple[float, float] = (0.0, 0.0)
    heatmap_cell_px: float = 1.0
    lesions: tuple[Lesion, ...] = ()
    call: str = ""
    score: float | None = None
    notes: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        width, height = (int(v) for v in self.size)
        if width <= 0 or height <= 0:
            raise ValueError(f"slide size must be positive, got {self.size}")
        object.__setattr__(self, "size", (width, height))
        object.__setattr__(self, "mpp", _finite("mpp", self.mpp, positive=True))
        if self.heatmap is not None:
            heatmap = np.asarray(self.heatmap, dtype=np.float32)
            if heatmap.ndim != 2 or heatmap.size == 0:
                raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {heatmap.shape}")
            heatmap = heatmap.copy()
            heatmap.flags.writeable = False
            object.__setattr__(self, "heatmap", heatmap)
        ox, oy = self.heatmap_origin
        object.__setattr__(self, "heatmap_origin", (_finite("origin x", ox), _finite("origin y", oy)))
        object.__setattr__(self, "heatmap_cell_px", _finite("heatmap_cell_px", self.heatmap_cell_px, True))
        object.__setattr__(self, "lesions", tuple(self.lesions))
        if self.score is not None:
            object.__setattr__(self, "score", _finite("score", self.score))
        object.__setattr__(self, "notes", tuple((str(k), str(v)) for k, v in self.notes))
