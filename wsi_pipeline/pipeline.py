"""One slide end to end: open -> tissue mask -> tiles -> inference -> aggregation -> outputs.

CONTRACT (implemented by the slide-pipeline work; batch processing builds on it):

    run_slide(slide_path, out_root, options, model) -> SlideResult

writes ``out_root/<slide stem>/`` atomically (temporary folder renamed when complete) and
raises a :class:`~wsi_pipeline.errors.WsiPipelineError` subclass for any bad input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class InferenceOptions:
    """User-settable parameters of a slide run (all recorded in summary.json)."""

    mpp: float | None = None  # override the slide's level-0 um/px
    stride: int | None = None  # in model pixels; None = patch size (96)
    batch_size: int = 256
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    tissue_threshold: float = 0.25  # min tissue fraction of a tile
    tumor_threshold: float = 0.5  # probability above which a cell counts as tumour
    num_readers: int = 2  # background tile-reading threads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SlideResult:
    """What a finished slide run reports (mirrors summary.json)."""

    slide: Path
    out_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)
