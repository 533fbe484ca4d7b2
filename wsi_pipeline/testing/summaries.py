"""A valid :class:`~wsi_pipeline.summary.SlideSummary` with made-up values, for tests of the summary
readers (resume, round trips) that need no real run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wsi_pipeline.aggregation import CATEGORY_MICRO
from wsi_pipeline.diagnosis import LesionRecord
from wsi_pipeline.inference.scores import InferenceStats
from wsi_pipeline.lesions import SCORE_METHOD
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.slide.info import SlideInfo
from wsi_pipeline.summary import ModelInfo, SlideSummary, Timings
from wsi_pipeline.tiling import TileGrid


def sample_summary(**changes: object) -> SlideSummary:
    """A summary of a made-up 2000 x 1600 px slide at 0.5 um/px; ``changes`` replace its fields."""
    grid = TileGrid(2000, 1600, slide_mpp=0.5, level=1, level_downsample=2.0)
    summary = SlideSummary(
        slide_info=SlideInfo(
            Path("/slides/sample.tif"), "tifffile:test", (2000, 1600), (1.0, 2.0, 4.0), 0.5, "metadata"
        ),
        slide_score=0.75,
        slide_score_method=SCORE_METHOD,
        tumor_threshold=0.5,
        n_tumor_regions=1,
        tumor_area_mm2=0.0348,
        largest_tumor_region_mm=0.264,
        category=CATEGORY_MICRO,
        n_tiles_total=len(grid),
        n_tiles_tissue=12,
        grid=grid.describe(),
        model=ModelInfo("probe", "mean_intensity_probe", "a" * 64, "/models/probe", 96, 0.972),
        options=InferenceOptions(),
        params={"pipeline_version": 1, "model_weights_sha256": "a" * 64, "stride": None},
        params_hash="0" * 64,
        inference=InferenceStats(0.5, 1.25, 0.125, 1.5, 2, 1, "cpu", "float32"),
        software={"wsi_pipeline": "0.1.0"},
        created_utc="2025-01-01T00:00:00+00:00",
        mask_shape=(100, 125),
        outputs=("heatmap.zarr", "summary.json"),
        timings=Timings(open_s=0.1, total_s=2.0),
        decision_rule={
            "name": "hysteresis-topk",
            "parameters": {"high": 0.9, "low": 0.5, "support_mm2": 0.026},
        },
        lesions=(LesionRecord(1, 0.264, 0.0348, 4, 0.93, 0.97, (3, 4)),),
    )
    return dataclasses.replace(summary, **changes)  # type: ignore[arg-type]
