"""One slide end to end: a short sequence of typed stages (see :mod:`wsi_pipeline.stages`)::

    open_slide -> SlideInfo -> TissueMask -> TileGrid -> TileScores -> SlideAggregate -> SlideSummary

``run_slide(slide_path, out_root, options, model) -> SlideResult`` writes ``out_root/<slide stem>/``
atomically (temporary folder renamed when complete), returns the summary with the heatmap, regions
and tile scores in memory, and raises a :class:`~wsi_pipeline.errors.WsiPipelineError` subclass for
any bad input.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import OutputError
from wsi_pipeline.files import atomic_output_dir, ensure_writable_dir, slide_out_dir
from wsi_pipeline.inference.dense import default_stride
from wsi_pipeline.inference.heap import release_free_memory
from wsi_pipeline.models.finite import check_finite_outputs
from wsi_pipeline.models.io import LoadedModel, load_model
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import write_outputs
from wsi_pipeline.outputs.overlay import thumbnail_size
from wsi_pipeline.result import SlideResult
from wsi_pipeline.slide import describe_slide, open_slide, thumbnail
from wsi_pipeline.slide.identity import slide_file_identity
from wsi_pipeline.stages import (
    ProgressFn,
    aggregate_scores,
    domain_warnings,
    score_tiles,
    select_tissue_cells,
    summarise,
)
from wsi_pipeline.summary import Timings
from wsi_pipeline.tiling import plan_grid
from wsi_pipeline.tissue import detect_tissue

__all__ = ["InferenceOptions", "ProgressFn", "SlideResult", "run_slide"]


@contextmanager
def _timed(times: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    times[name] = time.perf_counter() - t0


def run_slide(
    slide_path: str | Path,
    out_root: str | Path,
    options: InferenceOptions | None = None,
    model: LoadedModel | None = None,
    progress: ProgressFn | None = None,
) -> SlideResult:
    """Analyse one slide and write ``out_root/<slide stem>/`` (see :mod:`wsi_pipeline.outputs`).

    ``model`` is a :class:`~wsi_pipeline.models.io.LoadedModel` (``None``: the shipped default).
    Raises :class:`~wsi_pipeline.errors.SlideOpenError`, :class:`~wsi_pipeline.errors.UnknownMppError`,
    :class:`~wsi_pipeline.errors.NoTissueError`, :class:`~wsi_pipeline.errors.SlideReadError`,
    :class:`~wsi_pipeline.errors.NonFiniteOutputError`, :class:`~wsi_pipeline.errors.OptionError` or
    :class:`~wsi_pipeline.errors.OutputError` (disk full included), each naming the slide; on
    failure nothing finished-looking is left. ``out_root`` is checked writable before the slide is
    analysed; the summary records the slide file's identity (``slide_file``).
    """
    started = time.perf_counter()
    slide_path, out_root = Path(slide_path), Path(out_root)
    options = options or InferenceOptions()
    device = resolve_device(options.device)
    if model is None:
        model = load_model(None, device=device)
    times: dict[str, float] = {}
    ensure_writable_dir(out_root)

    t0 = time.perf_counter()
    with open_slide(slide_path) as reader:
        slide_file = slide_file_identity(slide_path)  # of the file just opened (a regular file)
        slide = describe_slide(reader, options.mpp)
        stride = options.stride or default_stride(model.module, model.config.patch_size)
        grid = plan_grid(slide, model.config.patch_size, model.config.mpp, stride)
        times["open_s"] = time.perf_counter() - t0
        with _timed(times, "tissue_s"):
            mask = detect_tissue(reader, slide.mpp)
            cells = select_tissue_cells(slide, grid, mask, options.tissue_threshold)
            warnings = domain_warnings(reader, grid, cells, model)
        release_free_memory()  # what tissue detection freed, before inference (see inference.heap)
        scores = score_tiles(reader, grid, cells, model, device, options, progress)
        check_finite_outputs(scores.probs, str(slide.shown_path), "tiles")  # NaN is not "no tumour"
        release_free_memory()
        with _timed(times, "thumbnail_s"):
            thumb = thumbnail(reader, max_size=thumbnail_size(slide.dimensions))
    with _timed(times, "aggregate_s"):
        heatmap, slide_aggregate, rule = aggregate_scores(grid, scores, model, options)

    stats = scores.stats
    timings = Timings(**times, read_s=stats.read_s, infer_s=stats.infer_s, wait_s=stats.wait_s)
    summary = summarise(slide, grid, mask, scores, slide_aggregate, model, options, timings, rule, warnings)
    summary = dataclasses.replace(summary, slide_file=slide_file)
    out_dir = slide_out_dir(out_root, slide_path)
    result = SlideResult(slide_path, out_dir, summary, grid, scores, heatmap, slide_aggregate, thumb)
    try:
        with atomic_output_dir(out_root, out_dir.name) as tmp:
            result = write_outputs(tmp, result, started)
    except OSError as exc:  # disk full, quota, permission: one line naming the slide
        where = f" ({Path(exc.filename).name})" if exc.filename else ""
        raise OutputError(
            f"{slide.shown_path}: cannot write outputs to {out_dir}: {exc.strerror or exc}{where}"
        ) from exc
    return result
