"""Fit the decision rule's parameters on simulated slides at a stated operating point.

The heatmaps are computed once (by the pipeline); the rule is re-applied over a grid of
``(low, support, high)`` without the network. For each ``low`` the candidate regions of every slide
are found once, with the lesion each one's peak hits (Camelyon16 matching,
:func:`wsi_pipeline.evaluation.froc.match_target`); ``support`` and ``high`` then only change which
candidates are kept (:mod:`wsi_pipeline.lesions`).

Operating point (defaults): at most ``max_negative_rate`` (1 in 20) of the negative slides called
micro/macro, every macro slide called macro, and at least ``min_micro`` (90 %) of the micro lesions
found. Among the parameters that meet it, the most sensitive (micro lesions found) is chosen; ties
go to fewer false-positive regions per slide, then a larger support, then a larger ``high``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_pipeline.aggregation import CATEGORY_MACRO, CATEGORY_MICRO, categorise, max_feret_cells
from wsi_pipeline.evaluation.froc import match_target
from wsi_pipeline.evaluation.simulated import SimulatedResult
from wsi_pipeline.evaluation.slide_metrics import CAMELYON_TOLERANCE_UM
from wsi_pipeline.lesions import candidate_regions, region_confidence
from wsi_pipeline.models.calibration import DecisionRule

LOWS = (0.3, 0.4, 0.5, 0.6, 0.7)
SUPPORT_CELLS = (1, 2, 3, 4, 6, 9)
HIGHS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)


@dataclass(frozen=True)
class OperatingPoint:
    max_negative_rate: float = 0.05
    min_micro: float = 0.9
    all_macro: bool = True


@dataclass(frozen=True)
class _Candidates:
    """One slide's candidates at one ``low``: sorted probabilities, cell counts, diameters (mm) and
    the lesion each hits (-1: false positive)."""

    probs: list[np.ndarray]
    n_cells: np.ndarray
    diameter_mm: np.ndarray
    target: np.ndarray


def _candidates(result: SimulatedResult, low: float, tolerance_um: float) -> _Candidates:
    found = candidate_regions(result.heatmap, low)
    lesions = result.truth.lesions
    tolerance = tolerance_um / result.truth.cell_um
    targets = []
    for c in found:
        hit = match_target(*result.truth_point(*c.peak_cell), lesions, tolerance)
        targets.append(-1 if hit is None else hit)
    cell_mm = result.cell_um / 1000.0
    return _Candidates(
        probs=[c.probs_desc for c in found],
        n_cells=np.array([len(c.cells) for c in found], dtype=np.int64),
        diameter_mm=np.array([max_feret_cells(c.cells) * cell_mm for c in found]),
        target=np.array(targets, dtype=np.int64),
    )


def _evaluate(
    results: Sequence[SimulatedResult], cands: list[_Candidates], k: int, high: float
) -> dict[str, Any]:
    neg_called = macro_called = n_neg = n_macro = 0
    micro_found = micro_total = macro_found = macro_total = fp = 0
    for result, c in zip(results, cands, strict=True):
        conf = np.array([region_confidence(p, k) for p in c.probs])
        kept = conf >= high if len(conf) else np.zeros(0, dtype=bool)
        category = "none"
        if kept.any():
            idx = np.flatnonzero(kept)
            largest = idx[np.lexsort((c.diameter_mm[idx], c.n_cells[idx]))[-1]]
            category = categorise(float(c.diameter_mm[largest]))
        kind = result.truth.kind
        if kind == "negative":
            n_neg += 1
            neg_called += category in (CATEGORY_MICRO, CATEGORY_MACRO)
        if kind == "macro":
            n_macro += 1
            macro_called += category == CATEGORY_MACRO
        hits = set(c.target[kept].tolist())
        fp += int((c.target[kept] == -1).sum())
        for i, lesion in enumerate(result.truth.lesions):
            if lesion.kind == "micro":
                micro_total += 1
                micro_found += i in hits
            elif lesion.kind == "macro":
                macro_total += 1
                macro_found += i in hits
    return {
        "negative_called": neg_called,
        "n_negative": n_neg,
        "macro_slides_called_macro": macro_called,
        "n_macro_slides": n_macro,
        "micro_found": micro_found,
        "n_micro": micro_total,
        "macro_found": macro_found,
        "n_macro": macro_total,
        "fp_per_slide": fp / max(len(results), 1),
    }


def _meets(m: dict[str, Any], point: OperatingPoint) -> bool:
    ok_fp = m["negative_called"] <= point.max_negative_rate * m["n_negative"] + 1e-9
    ok_macro = not point.all_macro or (
        m["macro_slides_called_macro"] == m["n_macro_slides"] and m["macro_found"] == m["n_macro"]
    )
    ok_micro = m["micro_found"] >= point.min_micro * m["n_micro"] - 1e-9
    return ok_fp and ok_macro and ok_micro


def fit_rule(
    results: Sequence[SimulatedResult],
    point: OperatingPoint = OperatingPoint(),
    lows: Sequence[float] = LOWS,
    support_cells: Sequence[int] = SUPPORT_CELLS,
    highs: Sequence[float] = HIGHS,
    tolerance_um: float = CAMELYON_TOLERANCE_UM,
) -> tuple[DecisionRule, dict[str, Any]]:
    """The chosen rule and a JSON-ready report (grid size, operating point, metrics of the choice,
    whether it met the operating point; without any rule meeting it, the most sensitive one that meets
    the false-positive limit, else the one with the fewest negative slides called)."""
    if not results:
        raise ValueError("no slides to fit the rule on")
    cell_um = results[0].cell_um
    cell_mm2 = (cell_um / 1000.0) ** 2
    rows = []
    for low in lows:
        cands = [_candidates(r, low, tolerance_um) for r in results]
        for k, high in itertools.product(support_cells, highs):
            if high < low:
                continue
            metrics = _evaluate(results, cands, k, high)
            rows.append(({"low": low, "support_cells": k, "high": high}, metrics))

    def sensitivity(m: dict[str, Any]) -> float:
        return m["micro_found"] / max(m["n_micro"], 1)

    def rank(row: tuple[dict[str, Any], dict[str, Any]]) -> tuple[float, ...]:
        p, m = row
        return (sensitivity(m), m["macro_found"], -m["fp_per_slide"], p["support_cells"], p["high"])

    feasible = [row for row in rows if _meets(row[1], point)]
    fp_ok = [row for row in rows if _meets(row[1], OperatingPoint(point.max_negative_rate, 0.0, False))]
    if feasible:
        chosen, status = max(feasible, key=rank), "met"
    elif fp_ok:
        chosen, status = max(fp_ok, key=rank), "false-positive limit met, sensitivity target missed"
    else:
        chosen = min(rows, key=lambda row: (row[1]["negative_called"], -sensitivity(row[1])))
        status = "false-positive limit missed"
    params, metrics = chosen
    rule = DecisionRule(
        high=float(params["high"]),
        low=float(params["low"]),
        support_mm2=round(params["support_cells"] * cell_mm2, 6),
    )
    report = {
        "status": status,
        "grid": {"low": list(lows), "support_cells": list(support_cells), "high": list(highs)},
        "n_candidates_tried": len(rows),
        "n_meeting_operating_point": len(feasible),
        "operating_point": {
            "max_negative_rate": point.max_negative_rate,
            "min_micro_found": point.min_micro,
            "all_macro_called_macro": point.all_macro,
        },
        "chosen": {**params, "support_mm2": rule.support_mm2, "cell_um": cell_um},
        "metrics": metrics,
    }
    return rule, report
