"""Build a seeded set of simulated slides (TIFF + truth JSON each) from a patch dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wsi_pipeline.simulate.plan import DEFAULT_COUNTS, plan_slides
from wsi_pipeline.simulate.truth import SimulationSpec, SlidePlan, truth_path
from wsi_pipeline.simulate.write import write_slide


def slide_name(plan: SlidePlan) -> str:
    """File name of a planned slide; it does not reveal the slide's kind."""
    return f"sim_s{plan.seed}_{plan.index:03d}.tif"


def build_slide_set(
    dataset,
    indices: np.ndarray,
    out_dir: Path | str,
    counts: Sequence[str] | Mapping[str, int] = DEFAULT_COUNTS,
    seed: int = 0,
    spec: SimulationSpec | None = None,
    upsample: int = 1,
    quality: int = 90,
) -> list[tuple[Path, Path]]:
    """Plan and write one slide per requested kind; returns ``(slide path, truth path)`` pairs.

    Patches come only from ``indices`` of ``dataset`` (by default use a model's recorded
    validation split, :func:`wsi_pipeline.evaluation.validation.validation_indices`, never its
    training patches).
    """
    out_dir = Path(out_dir)
    plans = plan_slides(np.asarray(dataset.labels), indices, counts, seed=seed, spec=spec)
    written = []
    for plan in plans:
        path = write_slide(plan, dataset, out_dir / slide_name(plan), upsample=upsample, quality=quality)
        written.append((path, truth_path(path)))
    return written
