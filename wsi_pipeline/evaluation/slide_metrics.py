"""Slide-level evaluation of metastasis calls against a known truth (e.g. simulated slides).

Inputs are plain frozen records: per slide a :class:`TrueSlide` (kind, lesions, placed-tissue
mask) and a :class:`SlideCall` (the pipeline's slide score, category, detected regions as points
in truth-grid cells, reported largest size, analysed cells). :func:`evaluate_slides` returns a
JSON-ready dict: slide-level ROC AUC of the score (micro + macro vs negative; ITC vs negative
apart), the confusion matrix of true kind vs called category, micro/macro calls on negative
slides, lesion-level FROC (see :mod:`wsi_pipeline.evaluation.froc`), micro/macro lesion detection
rates, largest-lesion size error and tissue recall. Intervals: bootstrap (AUC, FROC) or exact
Clopper-Pearson (proportions), 95 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsi_pipeline.errors import OptionError
from wsi_pipeline.evaluation.froc import FROC_RATES, SlideMatches, froc_bootstrap, froc_curve, match_slide
from wsi_pipeline.evaluation.metrics import bootstrap_intervals, roc_auc

KINDS = ("negative", "itc", "micro", "macro")
CALLS = ("none", "itc", "micro", "macro")
_CALL_NAMES = {
    "none": "none",
    "negative": "none",
    "itc": "itc",
    "isolated tumour cells": "itc",
    "micro": "micro",
    "micrometastasis": "micro",
    "macro": "macro",
    "macrometastasis": "macro",
}
CAMELYON_TOLERANCE_UM = 75.0


def call_kind(category: str) -> str:
    """``none``/``itc``/``micro``/``macro`` from a short name or the pipeline's category wording."""
    try:
        return _CALL_NAMES[str(category).strip().lower()]
    except KeyError:
        raise OptionError(f"unknown slide category {category!r}") from None


@dataclass(frozen=True, eq=False)
class TrueLesion:
    kind: str  # "itc", "micro" or "macro"
    cells: np.ndarray  # (n, 2) int (row, col) of the truth grid
    diameter_mm: float


@dataclass(frozen=True, eq=False)
class TrueSlide:
    kind: str  # one of KINDS
    lesions: tuple[TrueLesion, ...]
    tissue: np.ndarray  # bool grid: cells where a tissue patch was placed
    cell_um: float

    @property
    def largest_mm(self) -> float:
        return max((lesion.diameter_mm for lesion in self.lesions), default=0.0)

    @classmethod
    def from_truth(cls, truth: Any) -> TrueSlide:
        """From a :class:`wsi_pipeline.simulate.SlideTruth` (or its plan)."""
        plan = getattr(truth, "plan", truth)
        lesions = tuple(TrueLesion(x.kind, x.cells, x.diameter_mm) for x in plan.lesions)
        return cls(plan.kind, lesions, np.asarray(plan.tissue, dtype=bool), plan.spec.cell_um)


@dataclass(frozen=True)
class Detection:
    """A detected region, located by one point (e.g. its most confident cell's centre) in cells."""

    row: float
    col: float
    confidence: float
    size_mm: float = float("nan")

    @classmethod
    def from_level0(cls, x: float, y: float, cell_px: float, confidence: float, size_mm: float = math.nan):
        """From a level-0 pixel position on a slide whose truth cells are ``cell_px`` wide."""
        return cls(row=y / cell_px, col=x / cell_px, confidence=confidence, size_mm=size_mm)


@dataclass(frozen=True, eq=False)
class SlideCall:
    slide_score: float
    category: str
    detections: tuple[Detection, ...] = ()
    largest_mm: float | None = None  # reported largest lesion; default: largest detection size
    analysed: np.ndarray | None = None  # bool grid of truth cells analysed (preferred) ...
    n_analysed: int | None = None  # ... or only their number

    @property
    def reported_largest_mm(self) -> float:
        if self.largest_mm is not None:
            return float(self.largest_mm)
        sizes = [d.size_mm for d in self.detections if np.isfinite(d.size_mm)]
        return max(sizes, default=0.0)


@dataclass(frozen=True)
class SlideCase:
    name: str
    truth: TrueSlide
    call: SlideCall
    extra: dict[str, Any] = field(default_factory=dict)


def analysed_cells(shape: tuple[int, int], cell_px: float, boxes: np.ndarray) -> np.ndarray:
    """bool grid: truth cells whose centre lies in any level-0 box ``(x0, y0, width, height)``."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, w, h in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, c1 = math.ceil(x0 / cell_px - 0.5), math.ceil((x0 + w) / cell_px - 0.5)
        r0, r1 = math.ceil(y0 / cell_px - 0.5), math.ceil((y0 + h) / cell_px - 0.5)
        mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
    return mask


def exact_interval(k: int, n: int, confidence: float = 0.95) -> list[float] | None:
    """Clopper-Pearson interval of the proportion ``k / n`` (None when ``n == 0``)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return [float(ci.low), float(ci.high)]


def _proportion(k: int, n: int) -> dict[str, Any]:
    return {"k": int(k), "n": int(n), "rate": k / n if n else None, "ci95": exact_interval(k, n)}


def _auc(cases: list[SlideCase], positive: tuple[str, ...], n_boot: int, seed: int) -> dict[str, Any]:
    chosen = [c for c in cases if c.truth.kind in positive or c.truth.kind == "negative"]
    labels = np.array([c.truth.kind != "negative" for c in chosen], dtype=np.int64)
    scores = np.array([c.call.slide_score for c in chosen], dtype=np.float64)
    out: dict[str, Any] = {"positives": "+".join(positive), "n_pos": int(labels.sum())}
    out["n_neg"] = int(len(labels) - labels.sum())
    if out["n_pos"] == 0 or out["n_neg"] == 0 or not np.isfinite(scores).all():
        return {**out, "value": None, "ci95": None}
    ci = bootstrap_intervals(labels, scores, n_boot=n_boot, seed=seed)["auc"] if n_boot > 0 else None
    return {**out, "value": roc_auc(labels, scores), "ci95": ci}


def _confusion(cases: list[SlideCase]) -> dict[str, Any]:
    matrix = np.zeros((len(KINDS), len(CALLS)), dtype=np.int64)
    for case in cases:
        matrix[KINDS.index(case.truth.kind), CALLS.index(call_kind(case.call.category))] += 1
    return {"rows": list(KINDS), "cols": list(CALLS), "matrix": matrix.tolist()}


def _size_errors(cases: list[SlideCase]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for case in cases:
        if case.truth.kind in ("micro", "macro"):
            true, called = case.truth.largest_mm, case.call.reported_largest_mm
            rows.append({"slide": case.name, "kind": case.truth.kind, "true_mm": true, "called_mm": called})
            rows[-1]["relative_error"] = (called - true) / true
    errors = np.abs([r["relative_error"] for r in rows])
    summary = {"mean_abs": float(errors.mean()), "max_abs": float(errors.max())} if len(rows) else {}
    return {**summary, "per_slide": rows}


def _tissue_recall(cases: list[SlideCase]) -> dict[str, Any]:
    """Analysed / placed tissue cells, from the analysed mask (or, without one, the analysed count)."""
    rows: list[dict[str, Any]] = []
    methods: set[str] = set()
    tumour_placed = tumour_missed = glass_analysed = 0
    for case in cases:
        tissue, call = case.truth.tissue, case.call
        placed = int(tissue.sum())
        if call.analysed is not None:
            analysed = np.asarray(call.analysed, dtype=bool)
            if analysed.shape != tissue.shape:
                raise OptionError(f"{case.name}: analysed mask {analysed.shape} != truth grid {tissue.shape}")
            hit, method = int((analysed & tissue).sum()), "mask"
            glass_analysed += int((analysed & ~tissue).sum())
            for lesion in case.truth.lesions:
                tumour_placed += len(lesion.cells)
                tumour_missed += int((~analysed[lesion.cells[:, 0], lesion.cells[:, 1]]).sum())
        elif call.n_analysed is not None:  # an upper bound: glass cells analysed would count too
            hit, method = min(int(call.n_analysed), placed), "count"
        else:
            continue
        methods.add(method)
        rows.append({"slide": case.name, "placed": placed, "analysed": hit, "recall": hit / placed})
    if not rows:
        return {"method": None, "per_slide": []}
    out: dict[str, Any] = {"method": methods.pop() if len(methods) == 1 else "mixed"}
    out["pooled"] = sum(r["analysed"] for r in rows) / sum(r["placed"] for r in rows)
    out["min"] = min(r["recall"] for r in rows)
    if out["method"] != "count":
        out["tumour_cells"] = {"placed": tumour_placed, "missed": tumour_missed}
        out["glass_cells_analysed"] = glass_analysed
    return {**out, "per_slide": rows}


def _lesion_detection(cases: list[SlideCase], matches: list[SlideMatches]) -> dict[str, Any]:
    out = {}
    for kind in ("micro", "macro"):
        conf = [
            c for m in matches for k, c in zip(m.lesion_kinds, m.lesion_confidence, strict=True) if k == kind
        ]
        out[kind] = _proportion(int(np.sum(~np.isnan(conf))), len(conf))
        slides = [c for c in cases if c.truth.kind == kind]
        called = sum(call_kind(c.call.category) == kind for c in slides)
        out[f"{kind}_slides_called_{kind}"] = _proportion(called, len(slides))
    return out


def evaluate_slides(
    cases: list[SlideCase], tolerance_um: float = CAMELYON_TOLERANCE_UM, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """All slide-level metrics of ``cases`` as a JSON-ready dict (None where undefined)."""
    if not cases:
        raise OptionError("no slides to evaluate")
    for case in cases:
        if case.truth.kind not in KINDS:
            raise OptionError(f"{case.name}: unknown true kind {case.truth.kind!r}")
    matches = [match_slide(c.truth.lesions, c.call.detections, tolerance_um / c.truth.cell_um) for c in cases]
    curve = froc_curve(matches)
    negatives = [c for c in cases if c.truth.kind == "negative"]
    lesion_calls = sum(call_kind(c.call.category) in ("micro", "macro") for c in negatives)
    neg_matches = [m for c, m in zip(cases, matches, strict=True) if c.truth.kind == "negative"]
    result: dict[str, Any] = {
        "n_slides": len(cases),
        "counts": {k: sum(c.truth.kind == k for c in cases) for k in KINDS},
        "auc": _auc(cases, ("micro", "macro"), n_boot, seed),
        "auc_itc": _auc(cases, ("itc",), n_boot, seed),
        "confusion": _confusion(cases),
        "negative_slides": {
            "called_micro_or_macro": _proportion(lesion_calls, len(negatives)),
            "fp_regions_per_slide": float(np.mean([len(m.fp_confidence) for m in neg_matches]))
            if neg_matches
            else None,
        },
        "froc": {
            "tolerance_um": tolerance_um,
            "rates": list(FROC_RATES),
            "sensitivity": curve.sensitivity_at().tolist(),
            "score": curve.score() if curve.n_lesions else None,
            "ci95": froc_bootstrap(matches, n_boot=n_boot, seed=seed) if curve.n_lesions else None,
            "n_lesions": curve.n_lesions,
            "fp_per_slide_all": float(curve.fp_per_slide[-1]),
            "curve": {"fp_per_slide": curve.fp_per_slide.tolist(), "sensitivity": curve.sensitivity.tolist()},
        },
        "lesion_detection": _lesion_detection(cases, matches),
        "size_error": _size_errors(cases),
        "tissue_recall": _tissue_recall(cases),
    }
    result["slides"] = [
        {
            "slide": c.name,
            "kind": c.truth.kind,
            "score": c.call.slide_score,
            "call": call_kind(c.call.category),
            "n_detections": len(c.call.detections),
            "n_fp": len(m.fp_confidence),
            "true_largest_mm": c.truth.largest_mm,
            "called_largest_mm": c.call.reported_largest_mm,
            **c.extra,
        }
        for c, m in zip(cases, matches, strict=True)
    ]
    return json_ready(result)


def json_ready(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays converted, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
