"""Seeded plans of simulated lymph-node slides (pure: labels in, :class:`SlidePlan` out, no I/O).

Slide ``i`` of a set with seed ``s`` draws everything from ``numpy.random.default_rng([s, i])``, so a
slide is the same whatever else is in the set. Tissue cells get normal (label 0) patches and lesion
cells tumour (label 1) patches, drawn with replacement from the given dataset indices (e.g. a
model's validation split) in a random D4 view each. The drawn slide must be of the requested kind
by the pN size rules (ITC < 0.2 mm, micro 0.2-2 mm, macro > 2 mm, largest dimension); otherwise the
layout is drawn again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wsi_pipeline.aggregation import ITC_MAX_MM, MICRO_MAX_MM
from wsi_pipeline.errors import DatasetError, OptionError
from wsi_pipeline.simulate.layout import LayoutError, grow_lesion, isolated_cells, max_feret, tissue_sections
from wsi_pipeline.simulate.truth import KINDS, GlassStyle, Lesion, SimulationSpec, SlidePlan

DEFAULT_COUNTS = {"negative": 8, "itc": 3, "micro": 5, "macro": 4}
MAX_ATTEMPTS = 100


def lesion_kind(diameter_mm: float) -> str:
    """``itc``, ``micro`` or ``macro`` for a lesion of this largest dimension (mm)."""
    if diameter_mm < ITC_MAX_MM:
        return "itc"
    return "micro" if diameter_mm <= MICRO_MAX_MM else "macro"


def expand_kinds(kinds: Sequence[str] | Mapping[str, int]) -> list[str]:
    """A list of slide kinds from a list or from counts per kind (taken in :data:`KINDS` order)."""
    if isinstance(kinds, Mapping):
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise OptionError(f"unknown slide kind(s) {unknown}; choose from {', '.join(KINDS)}")
        if any(int(n) < 0 for n in kinds.values()):
            raise OptionError("slide counts must not be negative")
        out = [kind for kind in KINDS for _ in range(int(kinds.get(kind, 0)))]
    else:
        out = list(kinds)
        unknown = sorted(set(out) - set(KINDS))
        if unknown:
            raise OptionError(f"unknown slide kind(s) {unknown}; choose from {', '.join(KINDS)}")
    if not out:
        raise OptionError("no slides requested")
    return out


def _lesion(cells: np.ndarray, cell_mm: float) -> Lesion:
    diameter = max_feret(cells) * cell_mm
    return Lesion(lesion_kind(diameter), cells, diameter, len(cells) * cell_mm**2)


def _draw_lesions(
    kind: str, sections: np.ndarray, spec: SimulationSpec, rng: np.random.Generator
) -> tuple[Lesion, ...]:
    cell_mm = spec.cell_um / 1000.0
    if kind == "negative":
        return ()
    if kind == "itc":
        count = int(rng.integers(spec.itc_count[0], spec.itc_count[1] + 1))
        return tuple(_lesion(cell[None], cell_mm) for cell in isolated_cells(sections > 0, count, rng))
    lo, hi = spec.micro_mm if kind == "micro" else spec.macro_mm
    target = rng.uniform(lo, hi) / cell_mm
    sizes = np.bincount(sections.ravel(), minlength=int(sections.max()) + 1)[1:]
    if kind == "macro":  # the biggest section; a micro lesion goes into any section, by size
        section = 1 + int(np.argmax(sizes))
    else:
        section = 1 + int(rng.choice(len(sizes), p=sizes / sizes.sum()))
    return (_lesion(grow_lesion(sections == section, target, rng), cell_mm),)


def _check_kind(kind: str, lesions: tuple[Lesion, ...]) -> bool:
    if kind == "negative":
        return not lesions
    if kind == "itc":
        return bool(lesions) and all(lesion.kind == "itc" for lesion in lesions)
    return len(lesions) == 1 and lesions[0].kind == kind


def plan_slide(
    labels: np.ndarray, indices: np.ndarray, kind: str, seed: int, index: int, spec: SimulationSpec
) -> SlidePlan:
    """One slide of ``kind``; patches are drawn from ``indices`` (into ``labels``) only."""
    if kind not in KINDS:
        raise OptionError(f"unknown slide kind {kind!r}; choose from {', '.join(KINDS)}")
    labels = np.asarray(labels).reshape(-1)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    normal = indices[labels[indices] == 0]
    tumour = indices[labels[indices] == 1]
    if not len(normal):
        raise DatasetError("no normal (label 0) patches among the given indices to build tissue from")
    if kind != "negative" and not len(tumour):
        raise DatasetError(f"no tumour (label 1) patches among the given indices for a {kind} slide")
    rng = np.random.default_rng([int(seed), int(index)])
    for _ in range(MAX_ATTEMPTS):
        n_sections = int(rng.integers(spec.sections[0], spec.sections[1] + 1))
        try:
            sections = tissue_sections(spec.grid, rng, n_sections, spec.coverage)
            lesions = _draw_lesions(kind, sections, spec, rng)
        except LayoutError:
            continue
        if _check_kind(kind, lesions):
            break
    else:
        raise OptionError(f"could not draw a {kind} slide on a {spec.grid} grid with {spec}")
    tumour_mask = np.zeros(spec.grid, dtype=bool)
    for lesion in lesions:
        tumour_mask[lesion.cells[:, 0], lesion.cells[:, 1]] = True
    source = np.full(spec.grid, -1, dtype=np.int64)
    normal_cells = (sections > 0) & ~tumour_mask
    source[normal_cells] = rng.choice(normal, int(normal_cells.sum()))
    if tumour_mask.any():
        source[tumour_mask] = rng.choice(tumour, int(tumour_mask.sum()))
    view = rng.integers(0, 8, spec.grid).astype(np.uint8)
    red, green, blue = (int(v) for v in rng.integers(240, 249, 3))
    glass = GlassStyle(
        rgb=(red, green, blue), noise=float(round(rng.uniform(1.0, 2.0), 3)), seed=int(rng.integers(2**31))
    )
    return SlidePlan(index, int(seed), kind, spec, sections, source, view, lesions, glass)


def plan_slides(
    labels: np.ndarray,
    indices: np.ndarray,
    kinds: Sequence[str] | Mapping[str, int] = DEFAULT_COUNTS,
    seed: int = 0,
    spec: SimulationSpec | None = None,
) -> list[SlidePlan]:
    """Plans for a set of slides: ``kinds`` lists one kind per slide, or gives counts per kind."""
    spec = spec or SimulationSpec()
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(labels)):
        raise DatasetError(f"patch indices out of range for a dataset of {len(labels)} patches")
    return [plan_slide(labels, indices, k, seed, i, spec) for i, k in enumerate(expand_kinds(kinds))]
