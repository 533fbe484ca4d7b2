"""What a pathologist reads first: the kept lesions (:class:`LesionRecord`) and the ``diagnosis``
block ``summary.json`` opens with, the call worded as a model's suggestion with rounded numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from wsi_pipeline.aggregation import CATEGORY_NONE, TumourRegion
from wsi_pipeline.files import JsonDict


@dataclass(frozen=True)
class LesionRecord:
    """One lesion kept by the decision rule, as ``summary.json`` lists it (``peak_cell``: heatmap
    (row, col) of its most confident cell; sizes in mm; ``confidence`` the rule's region confidence)."""

    number: int
    max_diameter_mm: float
    area_mm2: float
    n_cells: int
    confidence: float
    max_prob: float
    peak_cell: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "peak_cell", (int(self.peak_cell[0]), int(self.peak_cell[1])))


def lesion_record(region: TumourRegion) -> LesionRecord:
    assert region.peak_cell is not None
    return LesionRecord(
        number=region.label,
        max_diameter_mm=region.max_diameter_mm,
        area_mm2=region.area_mm2,
        n_cells=len(region.cells),
        confidence=region.confidence,
        max_prob=region.max_prob,
        peak_cell=region.peak_cell,
    )


#: How the category is worded in the diagnosis block: a model's suggestion, not a diagnosis.
SUGGESTIONS = {
    CATEGORY_NONE: "no metastasis suspected",
    "isolated tumour cells": "suspected isolated tumour cells",
    "micrometastasis": "suspected micrometastasis",
    "macrometastasis": "suspected macrometastasis",
}
DIAGNOSIS_NOTE = "suggestion of an automated model, for review by a pathologist; not a diagnosis"


def diagnosis_block(
    category: str, lesions: Sequence[LesionRecord], score: float, warnings: Sequence[str]
) -> JsonDict:
    """``call`` (e.g. "suspected micrometastasis"), largest lesion (mm, 2 decimals), number of
    lesions, score (2 decimals), the warnings and a note that this is a suggestion."""
    largest = max((lesion.max_diameter_mm for lesion in lesions), default=None)
    return {
        "call": SUGGESTIONS[category],
        "largest_lesion_mm": None if largest is None else round(largest, 2),
        "n_lesions": len(lesions),
        "score": None if math.isnan(score) else round(score, 2),
        "warnings": list(warnings),
        "note": DIAGNOSIS_NOTE,
    }
