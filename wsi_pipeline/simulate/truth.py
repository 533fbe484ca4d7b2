"""Frozen records of a simulated slide: its settings, its plan (layout + patches) and its truth file.

A :class:`SlidePlan` is pure data (no pixels): which dataset patch, in which of the 8 D4 views,
fills each cell of the grid, and where the lesions are. A :class:`SlideTruth` is a plan plus how it
was written; it round-trips through ``<slide>.truth.json`` beside each slide, whose keys are:

- ``format`` ("wsi_pipeline.simulated_slide"), ``version`` (1), ``slide`` (file name);
- ``mpp`` (level 0), ``upsample``, ``cell_px`` (level-0 px per cell), ``cell_um``, ``grid`` [rows, cols];
- ``index``, ``seed``, ``kind`` (negative/itc/micro/macro), ``spec`` (the :class:`SimulationSpec`);
- ``n_sections``, ``n_tissue_cells``, ``n_tumour_cells``, ``tissue_fraction``, ``largest_lesion_mm``;
- ``lesions``: per lesion ``kind``, ``diameter_mm`` (max Feret of the union of its cell squares),
  ``area_mm2``, ``n_cells``, ``bbox`` [r0, c0, r1, c1) and ``cells`` [[r, c], ...];
- ``glass`` (``rgb``, ``noise``, ``seed``), ``patches`` (``dataset``: its description, ``ids``:
  dataset index -> patch id for every patch placed);
- grids, row by row: ``sections`` and ``view`` as digit strings (0 = glass / section k; D4 view),
  ``source`` as lists of ints (dataset index, -1 = glass). Placed tissue cells are ``source >= 0``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.errors import DatasetError
from wsi_pipeline.pcam import PCAM_MPP, PCAM_PATCH

KINDS = ("negative", "itc", "micro", "macro")
TRUTH_FORMAT = "wsi_pipeline.simulated_slide"
TRUTH_VERSION = 1


@dataclass(frozen=True)
class SimulationSpec:
    """How slides are drawn. Sizes are the lesion's largest dimension (max Feret diameter) in mm."""

    grid: tuple[int, int] = (72, 72)
    patch_px: int = PCAM_PATCH
    patch_mpp: float = PCAM_MPP
    sections: tuple[int, int] = (2, 3)  # inclusive range of tissue sections per slide
    coverage: tuple[float, float] = (0.35, 0.60)  # fraction of the grid that is tissue
    itc_count: tuple[int, int] = (1, 3)  # isolated tumour cells per ITC slide (one cell each)
    micro_mm: tuple[float, float] = (0.3, 1.8)  # target size range of a micrometastasis
    macro_mm: tuple[float, float] = (2.3, 3.5)  # target size range of a macrometastasis

    @property
    def cell_um(self) -> float:
        return self.patch_px * self.patch_mpp

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationSpec:
        names = {f.name for f in fields(cls)}
        # JSON values: lists back to the tuples the fields hold
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names
        }
        return cls(**kwargs)


@dataclass(frozen=True)
class GlassStyle:
    """Near-white glass: base RGB plus Gaussian pixel noise, from a bank of 8 tiles drawn with ``seed``."""

    rgb: tuple[int, int, int]
    noise: float
    seed: int


@dataclass(frozen=True, eq=False)
class Lesion:
    """One tumour lesion: its cells (row, col), its max Feret diameter (mm) and area (mm2)."""

    kind: str  # "itc", "micro" or "macro"
    cells: np.ndarray
    diameter_mm: float
    area_mm2: float

    def __post_init__(self) -> None:
        cells = np.array(self.cells, dtype=np.int64).reshape(-1, 2)
        cells.setflags(write=False)
        object.__setattr__(self, "cells", cells)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1), end-exclusive."""
        lo, hi = self.cells.min(0), self.cells.max(0) + 1
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "diameter_mm": round(self.diameter_mm, 6),
            "area_mm2": round(self.area_mm2, 6),
            "n_cells": len(self.cells),
            "bbox": list(self.bbox),
            "cells": self.cells.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lesion:
        return cls(data["kind"], np.asarray(data["cells"]), data["diameter_mm"], data["area_mm2"])


def _frozen_array(values: Any, dtype: type) -> np.ndarray:
    array: np.ndarray = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


def _digit_rows(grid: np.ndarray) -> list[str]:
    return ["".join(map(str, row)) for row in grid.tolist()]


def _from_digit_rows(rows: list[str]) -> np.ndarray:
    return np.array([[int(ch) for ch in row] for row in rows], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class SlidePlan:
    """Everything needed to render one slide. ``source[r, c]``: dataset index (-1 = glass);
    ``view[r, c]``: D4 view 0..7 of that patch (for glass: which of the 8 glass tiles);
    ``sections[r, c]``: 0 = glass, k = tissue section k."""

    index: int
    seed: int
    kind: str
    spec: SimulationSpec
    sections: np.ndarray
    source: np.ndarray
    view: np.ndarray
    lesions: tuple[Lesion, ...]
    glass: GlassStyle

    def __post_init__(self) -> None:
        object.__setattr__(self, "sections", _frozen_array(self.sections, np.int8))
        object.__setattr__(self, "source", _frozen_array(self.source, np.int64))
        object.__setattr__(self, "view", _frozen_array(self.view, np.uint8))
        object.__setattr__(self, "lesions", tuple(self.lesions))

    @property
    def tissue(self) -> np.ndarray:
        """Cells holding a dataset patch (the denominator of tissue recall)."""
        return self.source >= 0

    @property
    def tumour(self) -> np.ndarray:
        mask = np.zeros(self.source.shape, dtype=bool)
        for lesion in self.lesions:
            mask[lesion.cells[:, 0], lesion.cells[:, 1]] = True
        return mask

    @property
    def largest_lesion_mm(self) -> float:
        return max((lesion.diameter_mm for lesion in self.lesions), default=0.0)

    @property
    def used_indices(self) -> np.ndarray:
        """Sorted distinct dataset indices placed on the slide."""
        return np.unique(self.source[self.source >= 0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seed": self.seed,
            "kind": self.kind,
            "spec": asdict(self.spec),
            "grid": list(self.source.shape),
            "cell_um": self.spec.cell_um,
            "n_sections": int(self.sections.max()),
            "n_tissue_cells": int(self.tissue.sum()),
            "n_tumour_cells": int(self.tumour.sum()),
            "tissue_fraction": round(float(self.tissue.mean()), 6),
            "largest_lesion_mm": round(self.largest_lesion_mm, 6),
            "lesions": [lesion.to_dict() for lesion in self.lesions],
            "glass": asdict(self.glass),
            "sections": _digit_rows(self.sections),
            "view": _digit_rows(self.view),
            "source": self.source.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlidePlan:
        glass = data["glass"]
        return cls(
            index=int(data["index"]),
            seed=int(data["seed"]),
            kind=data["kind"],
            spec=SimulationSpec.from_dict(data["spec"]),
            sections=_from_digit_rows(data["sections"]),
            source=np.asarray(data["source"]),
            view=_from_digit_rows(data["view"]),
            lesions=tuple(Lesion.from_dict(d) for d in data["lesions"]),
            glass=GlassStyle(tuple(glass["rgb"]), float(glass["noise"]), int(glass["seed"])),
        )


@dataclass(frozen=True, eq=False)
class SlideTruth:
    """A written slide: its plan, file name, level-0 um/px, upsampling and the ids of its patches."""

    plan: SlidePlan
    slide: str
    upsample: int
    patch_ids: dict[int, str] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)

    @property
    def mpp(self) -> float:
        return self.plan.spec.patch_mpp / self.upsample

    @property
    def cell_px(self) -> int:
        """Level-0 pixels per cell side."""
        return self.plan.spec.patch_px * self.upsample

    def to_dict(self) -> dict[str, Any]:
        head = {"format": TRUTH_FORMAT, "version": TRUTH_VERSION, "slide": self.slide}
        head.update({"mpp": self.mpp, "upsample": self.upsample, "cell_px": self.cell_px})
        body = self.plan.to_dict()
        grids = {k: body.pop(k) for k in ("sections", "view", "source")}
        patches = {"dataset": self.dataset, "ids": {str(k): v for k, v in sorted(self.patch_ids.items())}}
        return {**head, **body, "patches": patches, **grids}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideTruth:
        if data.get("format") != TRUTH_FORMAT or int(data.get("version", -1)) != TRUTH_VERSION:
            raise DatasetError(f"not a version-{TRUTH_VERSION} simulated-slide truth file")
        patches = data.get("patches", {})
        return cls(
            plan=SlidePlan.from_dict(data),
            slide=data["slide"],
            upsample=int(data["upsample"]),
            patch_ids={int(k): v for k, v in patches.get("ids", {}).items()},
            dataset=dict(patches.get("dataset", {})),
        )

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> SlideTruth:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read truth file: {exc}") from exc
        try:
            return cls.from_dict(data)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: malformed truth file ({exc!r})") from exc


def truth_path(slide_path: Path | str) -> Path:
    """The truth JSON written beside a slide: ``name.tif`` -> ``name.truth.json``."""
    slide_path = Path(slide_path)
    return slide_path.with_name(slide_path.stem + ".truth.json")
