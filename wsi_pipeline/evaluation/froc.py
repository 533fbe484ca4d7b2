"""Lesion-level detection scoring as Camelyon16 did it: detections matched to lesions, then FROC.

Matching rule (per slide). A detection is a point ``(row, col)`` in truth-grid cell units (cell
``(r, c)`` covers ``[r, r + 1) x [c, c + 1)``). It *hits* a lesion when the point lies inside the
lesion's cells or within ``tolerance`` cells of them (Euclidean distance to the nearest cell square;
Camelyon16 dilated its lesion masks by 75 um for the same purpose). A point that hits several lesions
goes to the nearest one, non-ITC lesions first on ties. Then:

- a hit on a micro/macro lesion is a true positive; each lesion counts once, with the highest
  confidence of the detections hitting it (further hits on it are neither TP nor FP);
- a hit on an ITC lesion is neither a TP nor an FP, and ITC lesions are not in the sensitivity;
- every other detection is a false positive.

FROC: over all confidence thresholds ``t``, sensitivity = lesions whose TP confidence >= t / all
micro+macro lesions, against false positives with confidence >= t / number of slides (all slides).
The sensitivity at a rate ``f`` is that of the lowest threshold whose FP rate is <= ``f`` (a step
curve, never better than an operating point that exists; Camelyon16's script interpolated linearly
between thresholds, which can read slightly higher). The FROC score is the mean sensitivity at
1/4, 1/2, 1, 2, 4 and 8 false positives per slide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FROC_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class SlideMatches:
    """One slide's matching: TP confidence per micro/macro lesion (NaN = missed), FP confidences,
    and how many detections were ignored (on ITC lesions, or repeat hits on a lesion)."""

    lesion_kinds: tuple[str, ...]
    lesion_confidence: np.ndarray
    fp_confidence: np.ndarray
    n_ignored: int


def point_to_cells_distance(row: float, col: float, cells: np.ndarray) -> float:
    """Euclidean distance (cells) from a point to the union of unit squares at ``cells``; 0 inside."""
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 2)
    dy = np.maximum.reduce([cells[:, 0] - row, np.zeros(len(cells)), row - (cells[:, 0] + 1)])
    dx = np.maximum.reduce([cells[:, 1] - col, np.zeros(len(cells)), col - (cells[:, 1] + 1)])
    return float(np.hypot(dy, dx).min()) if len(cells) else float("inf")


def match_target(row: float, col: float, lesions, tolerance: float) -> int | None:
    """Index of the lesion a detection at ``(row, col)`` hits (nearest; non-ITC first on ties), or
    ``None`` for a false positive."""
    dist = [point_to_cells_distance(row, col, lesion.cells) for lesion in lesions]
    hits = [k for k, d in enumerate(dist) if d <= tolerance]
    if not hits:
        return None
    return min(hits, key=lambda k: (dist[k], lesions[k].kind == "itc"))


def match_slide(lesions, detections, tolerance: float) -> SlideMatches:
    """Match ``detections`` (``.row``, ``.col``, ``.confidence``) to ``lesions`` (``.kind``, ``.cells``)."""
    scored = [k for k, lesion in enumerate(lesions) if lesion.kind != "itc"]
    best = np.full(len(scored), np.nan)
    fps: list[float] = []
    ignored = 0
    for det in detections:
        target = match_target(det.row, det.col, lesions, tolerance)
        if target is None:
            fps.append(float(det.confidence))
            continue
        if lesions[target].kind == "itc":
            ignored += 1
            continue
        slot = scored.index(target)
        if not np.isnan(best[slot]):
            ignored += 1
        best[slot] = np.fmax(best[slot], float(det.confidence))
    kinds = tuple(lesions[k].kind for k in scored)
    return SlideMatches(kinds, best, np.asarray(fps, dtype=np.float64), ignored)


@dataclass(frozen=True)
class FrocCurve:
    """Operating points from the strictest threshold (first: none kept) to the most permissive."""

    thresholds: np.ndarray
    fp_per_slide: np.ndarray
    sensitivity: np.ndarray
    n_slides: int
    n_lesions: int

    def sensitivity_at(self, rates=FROC_RATES) -> np.ndarray:
        rates = np.asarray(rates, dtype=np.float64)
        if self.n_lesions == 0:
            return np.full(len(rates), np.nan)
        # fp_per_slide is non-decreasing: the last point with fp <= rate has the best sensitivity.
        last = np.searchsorted(self.fp_per_slide, rates, side="right") - 1
        return self.sensitivity[last]

    def score(self, rates=FROC_RATES) -> float:
        return float(np.mean(self.sensitivity_at(rates)))


def froc_curve(matches: list[SlideMatches]) -> FrocCurve:
    """FROC operating points of a set of slides (see the module docstring)."""
    tp = np.concatenate([m.lesion_confidence for m in matches]) if matches else np.zeros(0)
    fp = np.concatenate([m.fp_confidence for m in matches]) if matches else np.zeros(0)
    found = np.sort(tp[~np.isnan(tp)])
    fp = np.sort(fp)
    thresholds = np.unique(np.concatenate([found, fp]))[::-1]
    n_slides, n_lesions = len(matches), len(tp)
    fp_counts = len(fp) - np.searchsorted(fp, thresholds, side="left")
    tp_counts = len(found) - np.searchsorted(found, thresholds, side="left")
    return FrocCurve(
        thresholds=np.concatenate([[np.inf], thresholds]),
        fp_per_slide=np.concatenate([[0.0], fp_counts / max(n_slides, 1)]),
        sensitivity=np.concatenate([[0.0], tp_counts / n_lesions if n_lesions else tp_counts * np.nan]),
        n_slides=n_slides,
        n_lesions=n_lesions,
    )


def froc_bootstrap(
    matches: list[SlideMatches], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> list[float] | None:
    """Percentile interval of the FROC score over slide resamples (None when it is undefined)."""
    if n_boot <= 0 or not matches:
        return None
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(matches), len(matches))
        curve = froc_curve([matches[i] for i in pick])
        if curve.n_lesions:
            scores.append(curve.score())
    if not scores:
        return None
    tail = (1 - confidence) / 2 * 100
    return [float(np.percentile(scores, tail)), float(np.percentile(scores, 100 - tail))]
