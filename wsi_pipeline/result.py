"""What :func:`~wsi_pipeline.pipeline.run_slide` hands back, and what the output writers read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_pipeline.aggregation import SlideAggregate, TumourRegion
from wsi_pipeline.inference.scores import TileScores
from wsi_pipeline.summary import SlideSummary
from wsi_pipeline.tiling import TileGrid


@dataclass(frozen=True)
class SlideResult:
    """One analysed slide, in memory: the summary and everything the output files are made from.

    ``heatmap`` is float32 ``grid.shape`` (NaN outside tissue); ``thumbnail`` the RGB slide thumbnail
    the overlay is drawn on; ``out_dir`` the slide's output folder (``OUT/<slide stem>``).
    """

    slide: Path
    out_dir: Path
    summary: SlideSummary
    grid: TileGrid
    scores: TileScores
    heatmap: np.ndarray
    aggregate: SlideAggregate
    thumbnail: np.ndarray

    def __post_init__(self) -> None:
        if self.heatmap.shape != self.grid.shape or self.heatmap.dtype != np.float32:
            raise ValueError(
                f"heatmap must be float32 {self.grid.shape}, got {self.heatmap.dtype} {self.heatmap.shape}"
            )
        if self.thumbnail.ndim != 3 or self.thumbnail.shape[2] != 3 or self.thumbnail.dtype != np.uint8:
            raise ValueError(
                f"thumbnail must be uint8 RGB (H, W, 3), got {self.thumbnail.dtype} {self.thumbnail.shape}"
            )

    @property
    def regions(self) -> tuple[TumourRegion, ...]:
        return self.aggregate.regions
