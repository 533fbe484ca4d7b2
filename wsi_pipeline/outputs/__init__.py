"""The files of one analysed slide, ``OUT/<slide stem>/``, one module per format.

:func:`write_outputs` is the one writer entry point: it writes every registered output of a
:class:`~wsi_pipeline.result.SlideResult` into a folder, ``summary.json`` last. A new format is a
module with ``NAME`` and ``write(folder, result)`` plus one line in :data:`OUTPUTS`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsi_pipeline.outputs import geojson, heatmap_zarr, overlay, summary_json, tiles_csv
from wsi_pipeline.outputs.heatmap_zarr import read_heatmap_zarr
from wsi_pipeline.outputs.summary_json import read_summary
from wsi_pipeline.result import SlideResult


@dataclass(frozen=True)
class OutputFormat:
    """One file (or folder) of a slide's outputs and the function that writes it from the result."""

    name: str
    write: Callable[[Path, SlideResult], None]


#: Every output of a slide, in the order summary.json lists them.
OUTPUTS: tuple[OutputFormat, ...] = (
    OutputFormat(heatmap_zarr.NAME, heatmap_zarr.write),
    OutputFormat(summary_json.NAME, summary_json.write),
    OutputFormat(tiles_csv.NAME, tiles_csv.write),
    OutputFormat(geojson.NAME, geojson.write),
    OutputFormat(overlay.NAME, overlay.write),
)
OUTPUT_NAMES = tuple(output.name for output in OUTPUTS)
HEATMAP_NAME, SUMMARY_NAME, TILES_NAME, GEOJSON_NAME, OVERLAY_NAME = OUTPUT_NAMES

__all__ = [
    "OUTPUTS",
    "OUTPUT_NAMES",
    "OutputFormat",
    "read_heatmap_zarr",
    "read_summary",
    "write_outputs",
]


def write_outputs(folder: Path, result: SlideResult, started: float | None = None) -> SlideResult:
    """Write every output of ``result`` into ``folder`` and return the result whose summary was written.

    ``summary.json`` comes last (a summary means every other file is there) and records the output
    names, the time the others took to write (``write_s``) and, given the run's start on the
    ``time.perf_counter`` clock, its total time (``total_s``).
    """
    t0 = time.perf_counter()
    for output in OUTPUTS:
        if output.name != SUMMARY_NAME:
            output.write(folder, result)
    now = time.perf_counter()
    timings = result.summary.timings
    timings = dataclasses.replace(
        timings, write_s=now - t0, total_s=timings.total_s if started is None else now - started
    )
    names = tuple(output.name for output in OUTPUTS)
    summary = dataclasses.replace(result.summary, outputs=names, timings=timings)
    result = dataclasses.replace(result, summary=summary)
    summary_json.write(folder, result)
    return result
