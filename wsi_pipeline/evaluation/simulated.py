"""Simulated slides through the whole pipeline: build a seeded set from a model's validation
patches, run it as one batch, and read each slide's outputs back against its truth.

Used by ``wsi-pipeline slide-eval`` (the slide-level table) and ``wsi-pipeline calibrate`` (which
re-applies the decision rule to the same heatmaps over a parameter grid, without the network).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.errors import DatasetError, ModelError, OptionError
from wsi_pipeline.evaluation.slide_metrics import Detection, SlideCall, SlideCase, TrueSlide, analysed_cells
from wsi_pipeline.files import slide_out_dir
from wsi_pipeline.lesions import apply_rule
from wsi_pipeline.models.calibration import DecisionRule
from wsi_pipeline.models.io import LoadedModel, read_train_hashes
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs.heatmap_zarr import read_heatmap_zarr
from wsi_pipeline.simulate import SimulationSpec, SlideTruth, build_slide_set
from wsi_pipeline.summary import SlideSummary

Echo = Callable[[str], object]


@dataclass(frozen=True)
class PatchPool:
    """The dataset rows slides are built from, and what they are."""

    indices: np.ndarray
    description: str
    warnings: tuple[str, ...] = ()


def patch_pool(model: LoadedModel, labels: np.ndarray, all_patches: bool = False) -> PatchPool:
    """The model's recorded validation split of ``labels``' dataset; with ``all_patches`` (only for a
    model without a recorded split, or data it was not trained on) every patch, with a warning."""
    from wsi_pipeline.evaluation.validation import validation_indices

    if not all_patches:
        try:
            indices = validation_indices(model.config.data, labels)
        except (ModelError, DatasetError) as exc:
            raise OptionError(
                f"{exc}; slides are built from the model's validation split only (never its training "
                "patches): give the data it was trained on, or --all-patches for held-out data"
            ) from None
        return PatchPool(indices, f"the model's validation split ({len(indices)} patches)")
    warning = (
        "warning: slides built from all patches of the data (--all-patches); figures are optimistic "
        "if the model was trained on any of them"
    )
    return PatchPool(np.arange(len(labels)), f"all {len(labels)} patches", (warning,))


def training_overlap(model: LoadedModel, dataset: Any, used: np.ndarray) -> int | None:
    """How many of the dataset rows ``used`` on the slides are training patches of the model (None:
    the model records no training-patch hashes)."""
    from wsi_pipeline.data.hashes import count_known, patch_hashes

    known = read_train_hashes(model.path)
    if known is None or not len(used):
        return None
    return count_known(patch_hashes(dataset.read(np.asarray(used))), known)


def build_set(
    dataset: Any,
    pool: PatchPool,
    out_dir: Path,
    counts: Mapping[str, int],
    seed: int,
    spec: SimulationSpec | None = None,
) -> list[Path]:
    """Write the seeded slides (TIFF + truth JSON) into ``out_dir``; returns the slide paths."""
    written = build_slide_set(dataset, pool.indices, out_dir, dict(counts), seed=seed, spec=spec)
    return [slide for slide, _ in written]


def run_set(
    slides: list[Path],
    out_root: Path,
    options: InferenceOptions,
    model_path: Path,
    workers: int | None,
    echo: Echo,
    progress: bool = False,
) -> None:
    """The pipeline on ``slides`` as one Dask batch (resume skips slides already done alike)."""
    from wsi_pipeline.batch.runner import run_batch

    report = run_batch(
        slides, out_root, options, model_path, workers=workers, progress=progress, echo=echo, echo_err=echo
    )
    if report.n_failed:
        raise OptionError(f"{report.n_failed} simulated slide(s) failed in the pipeline; see above")


@dataclass(frozen=True, eq=False)
class SimulatedResult:
    """One simulated slide after the pipeline: truth, summary and heatmap with its level-0 geometry."""

    name: str
    truth: TrueSlide
    truth_cell_px: float  # level-0 px per truth cell
    summary: SlideSummary
    heatmap: np.ndarray
    origin: tuple[float, float]  # level-0 (x, y) of heatmap cell (0, 0)
    cell_px: float  # level-0 px per heatmap cell

    @property
    def cell_um(self) -> float:
        return float(self.summary.grid.cell_size_um)

    def truth_point(self, row: int, col: int) -> tuple[float, float]:
        """(row, col) in truth cells of the centre of heatmap cell ``(row, col)``."""
        x = self.origin[0] + (col + 0.5) * self.cell_px
        y = self.origin[1] + (row + 0.5) * self.cell_px
        return y / self.truth_cell_px, x / self.truth_cell_px

    def analysed(self) -> np.ndarray:
        """bool truth grid: cells whose centre lies in an analysed heatmap cell's footprint."""
        rows, cols = np.nonzero(np.isfinite(self.heatmap))
        boxes = np.column_stack(
            [
                self.origin[0] + cols * self.cell_px,
                self.origin[1] + rows * self.cell_px,
                np.full(len(rows), self.cell_px),
                np.full(len(rows), self.cell_px),
            ]
        )
        return analysed_cells(self.truth.tissue.shape, self.truth_cell_px, boxes)

    def _detection(self, peak: tuple[int, int], confidence: float, size_mm: float) -> Detection:
        row, col = self.truth_point(*peak)
        return Detection(row=row, col=col, confidence=confidence, size_mm=size_mm)

    def case(self, analysed: np.ndarray | None = None) -> SlideCase:
        """What the pipeline wrote for this slide (``summary.json``) against its truth."""
        s = self.summary
        detections = tuple(self._detection(x.peak_cell, x.confidence, x.max_diameter_mm) for x in s.lesions)
        call = SlideCall(
            slide_score=s.slide_score,
            category=s.category,
            detections=detections,
            largest_mm=s.largest_tumor_region_mm,
            analysed=self.analysed() if analysed is None else analysed,
        )
        return SlideCase(self.name, self.truth, call, {"n_lesions": len(s.lesions)})

    def case_for_rule(self, rule: DecisionRule, analysed: np.ndarray | None = None) -> SlideCase:
        """The same slide under another decision rule, re-applied to its heatmap."""
        agg = apply_rule(self.heatmap, self.cell_um, rule)
        detections = tuple(
            self._detection(r.peak_cell or (0, 0), r.confidence, r.max_diameter_mm) for r in agg.regions
        )
        call = SlideCall(
            agg.slide_score, agg.category, detections, agg.largest_tumor_region_mm, analysed=analysed
        )
        return SlideCase(self.name, self.truth, call)


def load_result(slide: Path, out_root: Path) -> SimulatedResult:
    """Read one simulated slide's truth, ``summary.json`` and ``heatmap.zarr``."""
    from wsi_pipeline.simulate import truth_path

    truth = SlideTruth.load(truth_path(slide))
    folder = slide_out_dir(out_root, slide)
    try:
        summary = SlideSummary.from_json((folder / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise OptionError(f"{folder}: cannot read the slide's summary: {exc}") from None
    heatmap, _ = read_heatmap_zarr(folder / "heatmap.zarr")
    grid = summary.grid
    origin = (float(grid.cell_origin_level0[0]), float(grid.cell_origin_level0[1]))
    return SimulatedResult(
        name=slide.name,
        truth=TrueSlide.from_truth(truth),
        truth_cell_px=float(truth.cell_px),
        summary=summary,
        heatmap=np.asarray(heatmap, dtype=np.float32),
        origin=origin,
        cell_px=float(grid.cell_size_level0_px),
    )


def describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)


def rate_text(k: int, n: int) -> str:
    return f"{k}/{n}" + ("" if not n else f" ({100 * k / n:.0f} %)")


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
