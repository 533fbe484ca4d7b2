"""The stage functions of the slide path, from one typed hand-off to the next::

    SlideReader -> SlideInfo -> TissueMask -> TileGrid (+ tissue cells) -> TileScores
                -> SlideAggregate -> SlideSummary

``describe_slide`` (:mod:`wsi_pipeline.slide.info`), ``detect_tissue`` (:mod:`wsi_pipeline.tissue`)
and ``plan_grid`` (:mod:`wsi_pipeline.tiling`) live with their types; this module holds the stages
that join several of them. :func:`wsi_pipeline.pipeline.run_slide` calls them in order.
"""

from __future__ import annotations

import datetime as _dt
import platform
from collections.abc import Callable

import numpy as np
import torch

from wsi_pipeline import __version__
from wsi_pipeline.aggregation import SlideAggregate, build_heatmap
from wsi_pipeline.diagnosis import lesion_record
from wsi_pipeline.domain import check_domain, sample_rows
from wsi_pipeline.errors import ModelConfigError, NoTissueError, OptionError
from wsi_pipeline.files import JsonDict
from wsi_pipeline.inference import TileInference, TileScores
from wsi_pipeline.inference.engine import BlockReader
from wsi_pipeline.lesions import apply_rule, resolve_rule, rule_record
from wsi_pipeline.models.io import LoadedModel
from wsi_pipeline.options import PIPELINE_VERSION, InferenceOptions, params_hash, result_params
from wsi_pipeline.slide import SlideInfo, SlideReader, read_region_at_mpp
from wsi_pipeline.slide.fast_blocks import fast_reads
from wsi_pipeline.summary import ModelInfo, SlideSummary, Timings
from wsi_pipeline.tiling import TileGrid
from wsi_pipeline.tissue import TissueMask

#: ``progress(increment, total)`` called as tiles are scored.
ProgressFn = Callable[[int, int], None]


def select_tissue_cells(slide: SlideInfo, grid: TileGrid, mask: TissueMask, threshold: float) -> np.ndarray:
    """``(N, 2)`` int64 ``(row, col)`` of the grid cells whose tile is at least ``threshold`` tissue
    (and not glass only), row-major; :class:`NoTissueError` when there is none. A tile overhanging
    the slide's edge is judged by its part inside the slide."""
    tiles = grid.tiles()
    size = grid.tile_size0
    fractions = mask.tile_fractions(tiles.x, tiles.y, size, size, within_slide=True)
    keep = (fractions >= threshold) & (fractions > 0)
    cells = np.column_stack([tiles.rows[keep], tiles.cols[keep]]).astype(np.int64)
    if len(cells) == 0:
        raise NoTissueError(
            f"{slide.shown_path}: no tissue found (no tile has a tissue fraction >= "
            f"{threshold:g} among {len(tiles)} tiles)"
        )
    return cells


def grid_block_reader(reader: SlideReader, grid: TileGrid) -> BlockReader:
    """``read_block(row0, col0, n_rows, n_cols)`` for the inference engine, at the model's resolution."""

    def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
        r = grid.block_region(row0, col0, n_rows, n_cols)
        return read_region_at_mpp(reader, r.x0, r.y0, r.width0, r.height0, r.out_w, r.out_h)

    return read_block


def domain_warnings(
    reader: SlideReader, grid: TileGrid, cells: np.ndarray, model: LoadedModel
) -> tuple[str, ...]:
    """The out-of-domain warning (:mod:`wsi_pipeline.domain`) from up to 256 tissue tiles spread over
    ``cells``, read at the model's resolution; none when the model records no statistics."""
    stats = model.config.domain
    if stats is None or len(cells) == 0:
        return ()
    read_block = grid_block_reader(reader, grid)
    tiles = np.stack([read_block(int(r), int(c), 1, 1) for r, c in cells[sample_rows(len(cells))]])
    warning = check_domain(stats, tiles).warning()
    return () if warning is None else (warning,)


def score_tiles(
    reader: SlideReader,
    grid: TileGrid,
    cells: np.ndarray,
    model: LoadedModel,
    device: torch.device,
    options: InferenceOptions,
    progress: ProgressFn | None = None,
) -> TileScores:
    """The model's tumour probability for each of ``cells``, read from the grid's pyramid level."""
    engine = TileInference(
        model,
        device=device,
        batch_size=options.batch_size,
        num_readers=options.num_readers,
        precision=options.precision,
        tta=options.tta,
    )
    total = len(cells)
    step = None if progress is None else (lambda n: progress(n, total))
    # batched JPEG (or tifffile) decoding of the level we read, where verified identical to the reader
    with fast_reads(reader, {grid.level}) as source:
        return engine.run(
            cells, grid_block_reader(source, grid), grid.patch_size, grid.stride_px, progress=step
        )


def aggregate_scores(
    grid: TileGrid, scores: TileScores, model: LoadedModel, options: InferenceOptions
) -> tuple[np.ndarray, SlideAggregate, JsonDict]:
    """The heatmap (float32 calibrated probabilities, NaN outside tissue), the slide-level numbers
    the decision rule derives from it, and the record of that rule (parameters and their sources)."""
    heatmap = build_heatmap(grid.shape, scores.cells, scores.probs)
    try:
        rule, sources = resolve_rule(model.config.decision_rule, options.rule_overrides())
    except ModelConfigError as exc:  # e.g. an overriding low above the model's high
        raise OptionError(f"decision rule: {str(exc).removeprefix('decision_rule.')}") from None
    config = model.config
    record = rule_record(
        rule,
        sources,
        grid.cell_um,
        config.temperature,
        "model config" if config.calibration is not None else "built-in default",
    )
    return heatmap, apply_rule(heatmap, grid.cell_um, rule), record


def summarise(
    slide: SlideInfo,
    grid: TileGrid,
    mask: TissueMask,
    scores: TileScores,
    slide_aggregate: SlideAggregate,
    model: LoadedModel,
    options: InferenceOptions,
    timings: Timings,
    decision_rule: JsonDict,
    warnings: tuple[str, ...] = (),
) -> SlideSummary:
    """The summary of one analysed slide from the stages' hand-offs."""
    agg, config = slide_aggregate, model.config
    return SlideSummary(
        slide_info=slide,
        slide_score=agg.slide_score,
        slide_score_method=agg.score_method,
        tumor_threshold=agg.tumor_threshold,
        n_tumor_regions=agg.n_tumor_regions,
        tumor_area_mm2=agg.tumor_area_mm2,
        largest_tumor_region_mm=agg.largest_tumor_region_mm,
        category=agg.category,
        n_tiles_total=len(grid),
        n_tiles_tissue=agg.n_tissue_cells,
        grid=grid.describe(),
        model=ModelInfo(
            model.name,
            config.architecture,
            model.weights_sha256,
            str(model.path),
            int(config.patch_size),
            float(config.mpp),
        ),  # fmt: skip
        options=options,
        params=result_params(model, options),
        params_hash=params_hash(model, options),
        inference=scores.stats,
        software={
            "wsi_pipeline": __version__,
            "pipeline_version": str(PIPELINE_VERSION),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        mask_shape=(int(mask.mask.shape[0]), int(mask.mask.shape[1])),
        timings=timings,
        decision_rule=decision_rule,
        lesions=tuple(lesion_record(r) for r in agg.regions),
        warnings=tuple(warnings),
    )
