"""The slide's decision rule: which heatmap regions are lesions, the slide score and the category.

Rule ``hysteresis-topk`` (parameters :class:`~wsi_pipeline.models.calibration.DecisionRule`, on
calibrated probabilities):

1. *candidates*: 8-connected components of tissue cells with probability >= ``low``;
2. *confidence* of a candidate: the sum of its ``k`` highest probabilities divided by ``k``
   (``k`` = cells covering ``support_mm2``; a candidate with fewer than ``k`` cells counts the
   missing ones as 0), so it is at most the region's peak and small regions are damped;
3. *kept* (a lesion): confidence >= ``high``. A kept region therefore has seed cells >= ``high``
   (hysteresis: seeds above ``high`` grown over cells above ``low``) and at least
   ``ceil(k * high)`` cells (minimum support);
4. *category*: pN size class of the largest kept region (none without one);
5. *slide score*: the highest confidence of any candidate (without candidates, the best cell's
   probability divided by ``k``: the same formula applied to that one cell).

Invariant (checked by :class:`~wsi_pipeline.aggregation.SlideAggregate` and tested on random
heatmaps): ``slide_score >= high`` exactly when at least one lesion is kept, i.e. exactly when the
category is not ``none``; the score of a slide called positive is its top lesion's confidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from wsi_pipeline.aggregation import (
    CATEGORY_NONE,
    SlideAggregate,
    TumourRegion,
    categorise,
    label_regions,
    max_feret_cells,
)
from wsi_pipeline.models.calibration import DEFAULT_RULE, DecisionRule

SCORE_METHOD = (
    "hysteresis-topk: highest region confidence (sum of the k most confident cells / k) over the "
    "8-connected regions of cells >= low; >= high exactly when a lesion is kept"
)
SOURCES = ("CLI", "model config", "built-in default")


@dataclass(frozen=True)
class Candidate:
    """One candidate region: its cells (row, col), their probabilities sorted high to low, and the
    most confident cell."""

    cells: np.ndarray
    probs_desc: np.ndarray
    peak_cell: tuple[int, int]

    def confidence(self, k: int) -> float:
        return region_confidence(self.probs_desc, k)


def region_confidence(probs_desc: np.ndarray, k: int) -> float:
    """Sum of the ``k`` first values of ``probs_desc`` (sorted high to low) divided by ``k``."""
    return float(np.sum(probs_desc[:k], dtype=np.float64) / k)


def candidate_regions(heatmap: np.ndarray, low: float) -> list[Candidate]:
    """The 8-connected regions of tissue cells >= ``low``, in label (row-major) order."""
    labels, count = label_regions(heatmap, low)
    out = []
    for label, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        cells = np.argwhere(labels[where] == label) + np.array([where[0].start, where[1].start])
        values = heatmap[cells[:, 0], cells[:, 1]].astype(np.float64)
        peak = int(np.argmax(values))
        out.append(Candidate(cells, -np.sort(-values), (int(cells[peak, 0]), int(cells[peak, 1]))))
    assert len(out) == count
    return out


def slide_score(heatmap: np.ndarray, candidates: list[Candidate], k: int) -> float:
    """The rule's slide score (module docstring, step 5); NaN without tissue."""
    if not np.isfinite(heatmap).any():
        return float("nan")
    if candidates:
        return min(1.0, max(c.confidence(k) for c in candidates))
    return min(1.0, float(np.nanmax(heatmap)) / k)


def _region(label: int, candidate: Candidate, cell_mm: float, k: int) -> TumourRegion:
    return TumourRegion(
        label=label,
        cells=candidate.cells,
        area_mm2=float(len(candidate.cells) * cell_mm**2),
        max_diameter_mm=max_feret_cells(candidate.cells) * cell_mm,
        mean_prob=float(candidate.probs_desc.mean()),
        max_prob=float(candidate.probs_desc[0]),
        confidence=candidate.confidence(k),
        peak_cell=candidate.peak_cell,
    )


def apply_rule(heatmap: np.ndarray, cell_um: float, rule: DecisionRule = DEFAULT_RULE) -> SlideAggregate:
    """Lesions, score, sizes and category of one heatmap whose cells are ``cell_um`` wide."""
    k = rule.support_cells(cell_um)
    candidates = candidate_regions(heatmap, rule.low)
    kept = [c for c in candidates if c.confidence(k) >= rule.high]
    cell_mm = cell_um / 1000.0
    regions = tuple(_region(i, c, cell_mm, k) for i, c in enumerate(kept, start=1))
    largest = max(regions, key=lambda r: (len(r.cells), r.max_diameter_mm), default=None)
    largest_mm = largest.max_diameter_mm if largest else 0.0
    score = slide_score(heatmap, candidates, k)
    if regions:  # float rounding must not break the invariant
        score = max(score, rule.high)
    return SlideAggregate(
        slide_score=score,
        score_method=SCORE_METHOD,
        n_tissue_cells=int(np.isfinite(heatmap).sum()),
        tumor_threshold=float(rule.low),
        tumor_area_mm2=float(sum(r.area_mm2 for r in regions)),
        largest_tumor_region_mm=float(largest_mm),
        category=categorise(largest_mm) if regions else CATEGORY_NONE,
        regions=regions,
        n_candidate_regions=len(candidates),
    )


def resolve_rule(
    model_rule: DecisionRule | None, overrides: Mapping[str, float | None]
) -> tuple[DecisionRule, dict[str, str]]:
    """The rule to apply and where each parameter came from (``CLI``, ``model config`` or
    ``built-in default``): ``overrides`` (``None`` = not given) win over the model's rule."""
    base = model_rule if model_rule is not None else DEFAULT_RULE
    base_source = "model config" if model_rule is not None else "built-in default"
    given = {name: value for name, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - set(base.parameters()))
    if unknown:
        raise ValueError(f"unknown rule parameter(s) {unknown}")
    rule = (
        replace(
            base,
            high=given.get("high", base.high),
            low=given.get("low", base.low),
            support_mm2=given.get("support_mm2", base.support_mm2),
        )
        if given
        else base
    )
    sources = {name: "CLI" if name in given else base_source for name in base.parameters()}
    return rule, sources


def rule_record(rule: DecisionRule, sources: Mapping[str, str], cell_um: float, temperature: float,
                temperature_source: str) -> dict[str, Any]:  # fmt: skip
    """What ``summary.json`` records about the rule: name, parameters, their sources, ``k``."""
    return {
        "name": rule.name,
        "parameters": rule.parameters(),
        "sources": dict(sources),
        "support_cells": rule.support_cells(cell_um),
        "calibration": {"temperature": temperature, "source": temperature_source},
    }
