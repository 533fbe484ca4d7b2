"""The files of one analysed slide, ``OUT/<slide stem>/``, one module per format.

:func:`write_outputs` is the one writer entry point: it writes every registered output of a
:class:`~wsi_pipeline.result.SlideResult` into a folder, then ``summary.json``, then
``manifest.json`` (sizes and checksums of all the others, :mod:`.manifest`); :func:`check_outputs`
is what resume asks before keeping a folder. A new format is a
module with ``NAME`` and ``write(folder, result)`` plus one line in :data:`OUTPUTS`; an output
that options can turn off also gives ``enabled(options)``, one written under another name when
large (``tiles.geojson.gz``) gives its ``alternatives``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import (
    geojson,
    heatmap_zarr,
    manifest,
    overlay,
    summary_json,
    tiles_csv,
    tiles_geojson,
    viewer_html,
)
from wsi_pipeline.outputs.heatmap_zarr import read_heatmap_zarr
from wsi_pipeline.outputs.summary_json import read_summary
from wsi_pipeline.result import SlideResult


def _always(options: InferenceOptions) -> bool:
    return True


@dataclass(frozen=True)
class OutputFormat:
    """One file (or folder) of a slide's outputs and the function that writes it from the result.

    ``enabled(options)``: whether a run with these options writes it; ``alternatives``: other names
    the same output may have (the gzipped file of a large output); ``extra_files``: what it writes
    beside ``name`` (the viewer's tile folder).
    """

    name: str
    write: Callable[[Path, SlideResult], None]
    enabled: Callable[[InferenceOptions], bool] = _always
    alternatives: tuple[str, ...] = ()
    extra_files: tuple[str, ...] = ()

    def written_name(self, folder: Path) -> str | None:
        """The name under which ``folder`` holds this output, None when it holds none."""
        for name in (self.name, *self.alternatives):
            if (Path(folder) / name).exists():
                return name
        return None


#: Every output of a slide, in the order summary.json lists them.
OUTPUTS: tuple[OutputFormat, ...] = (
    OutputFormat(heatmap_zarr.NAME, heatmap_zarr.write),
    OutputFormat(summary_json.NAME, summary_json.write),
    OutputFormat(tiles_csv.NAME, tiles_csv.write),
    OutputFormat(geojson.NAME, geojson.write),
    OutputFormat(tiles_geojson.NAME, tiles_geojson.write, alternatives=(tiles_geojson.GZIP_NAME,)),
    OutputFormat(overlay.NAME, overlay.write),
    OutputFormat(viewer_html.NAME, viewer_html.write, viewer_html.enabled, extra_files=viewer_html.EXTRA),
    OutputFormat(manifest.NAME, manifest.write),
)
OUTPUT_NAMES = tuple(output.name for output in OUTPUTS)
#: Every file and folder a slide folder holds with the default options (small slide: no .gz).
OUTPUT_FILES = tuple(name for output in OUTPUTS for name in (output.name, *output.extra_files))
(
    HEATMAP_NAME,
    SUMMARY_NAME,
    TILES_NAME,
    GEOJSON_NAME,
    TILES_GEOJSON_NAME,
    OVERLAY_NAME,
    VIEWER_NAME,
    MANIFEST_NAME,
) = OUTPUT_NAMES
_LAST = (SUMMARY_NAME, MANIFEST_NAME)  # written in this order after all the others

__all__ = [
    "OUTPUTS",
    "OUTPUT_FILES",
    "OUTPUT_NAMES",
    "OutputFormat",
    "check_outputs",
    "enabled_outputs",
    "has_outputs",
    "read_heatmap_zarr",
    "read_summary",
    "write_outputs",
]


def enabled_outputs(options: InferenceOptions) -> tuple[OutputFormat, ...]:
    """The outputs a run with ``options`` writes."""
    return tuple(output for output in OUTPUTS if output.enabled(options))


def has_outputs(folder: Path, options: InferenceOptions) -> bool:
    """True when ``folder`` holds every output a run with ``options`` writes (what resume checks)."""
    return all(output.written_name(folder) is not None for output in enabled_outputs(options))


def check_outputs(folder: Path, options: InferenceOptions, checksums: bool = True) -> str | None:
    """Why ``folder`` is not a complete result of a run with ``options`` (first problem: an output
    missing, a file missing, truncated or changed since the manifest was written), ``None`` when it is."""
    for output in enabled_outputs(options):
        if output.written_name(folder) is None:
            return f"{output.name} missing"
    return manifest.check_manifest(folder, checksums=checksums)


def write_outputs(folder: Path, result: SlideResult, started: float | None = None) -> SlideResult:
    """Write every output of ``result`` (those its options enable) into ``folder`` and return the
    result whose summary was written.

    ``summary.json`` comes after the others and records the names written, the time the others
    took to write (``write_s``) and, given the run's start on the ``time.perf_counter`` clock, its
    total time (``total_s``). ``manifest.json`` comes last: sizes and checksums of every file.
    """
    t0 = time.perf_counter()
    outputs = enabled_outputs(result.summary.options)
    for output in outputs:
        if output.name not in _LAST:
            output.write(folder, result)
    now = time.perf_counter()
    timings = result.summary.timings
    timings = dataclasses.replace(
        timings, write_s=now - t0, total_s=timings.total_s if started is None else now - started
    )
    names = tuple(output.written_name(folder) or output.name for output in outputs)
    summary = dataclasses.replace(result.summary, outputs=names, timings=timings)
    result = dataclasses.replace(result, summary=summary)
    summary_json.write(folder, result)
    manifest.write(folder, result)
    return result
