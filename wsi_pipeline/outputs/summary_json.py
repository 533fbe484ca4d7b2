"""``summary.json``: the typed slide summary (:class:`~wsi_pipeline.summary.SlideSummary`), written
last so that a summary means every other output is there."""

from __future__ import annotations

from pathlib import Path

from wsi_pipeline.result import SlideResult
from wsi_pipeline.summary import SlideSummary

NAME = "summary.json"


def write(folder: Path, result: SlideResult) -> None:
    (folder / NAME).write_text(result.summary.to_json())


def read_summary(folder: Path) -> SlideSummary | None:
    """The summary in an output folder, or ``None`` when it is missing or not a complete summary."""
    try:
        return SlideSummary.from_json((Path(folder) / NAME).read_text())
    except (OSError, ValueError):
        return None
