"""One slide end to end: open -> tissue mask -> tiles -> inference -> aggregation -> outputs.

CONTRACT (implemented by the slide-pipeline work; batch processing builds on it):

    run_slide(slide_path, out_root, options, model) -> SlideResult

writes ``out_root/<slide stem>/`` atomically (temporary folder renamed when complete) and
raises a :class:`~wsi_pipeline.errors.WsiPipelineError` subclass for any bad input.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.errors import NoTissueError, OptionError, UnknownMppError

#: Bumped whenever a change to the pipeline changes results for the same model and options.
PIPELINE_VERSION = 1

#: Slides more than this many times coarser than the model (level-0 px per model px below it) are
#: refused: their um/px is almost certainly wrong (e.g. a thumbnail-resolution TIFF tag).
MIN_SCALE = 0.25

#: ``progress(increment, total)`` called as tiles are scored.
ProgressFn = Callable[[int, int], None]


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

    def validate(self) -> None:
        """Raise :class:`OptionError` for out-of-range values."""
        if self.mpp is not None and not (isinstance(self.mpp, (int, float)) and 0 < self.mpp < math.inf):
            raise OptionError(f"--mpp must be a positive number, got {self.mpp!r}")
        if self.stride is not None and int(self.stride) < 1:
            raise OptionError(f"--stride must be >= 1 model pixel, got {self.stride}")
        if int(self.batch_size) < 1:
            raise OptionError(f"--batch-size must be >= 1, got {self.batch_size}")
        if int(self.num_readers) < 1:
            raise OptionError(f"num_readers must be >= 1, got {self.num_readers}")
        for name in ("tissue_threshold", "tumor_threshold"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise OptionError(f"--{name.replace('_', '-')} must be within [0, 1], got {value}")

    def result_params(self) -> dict[str, Any]:
        """The options that change results (device, batch size and readers do not)."""
        return {
            "mpp": self.mpp,
            "stride": self.stride,
            "tissue_threshold": float(self.tissue_threshold),
            "tumor_threshold": float(self.tumor_threshold),
        }


@dataclass
class SlideResult:
    """What a finished slide run reports (mirrors summary.json)."""

    slide: Path
    out_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)


def _model_config_for_hash(model: Any) -> dict[str, Any]:
    config = model.config.to_dict()
    for provenance in ("data", "metrics", "training", "name"):
        config.pop(provenance, None)
    return config


def result_params(model: Any, options: InferenceOptions) -> dict[str, Any]:
    """Everything that determines a slide's outputs: weights, model config, options, pipeline version."""
    return {
        "pipeline_version": PIPELINE_VERSION,
        "model_weights_sha256": model.weights_sha256,
        "model_config": _model_config_for_hash(model),
        **options.result_params(),
    }


def params_hash(model: Any, options: InferenceOptions) -> str:
    """Stable sha256 of :func:`result_params`; batch runs skip slides whose summary has the same."""
    text = json.dumps(result_params(model, options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- tiles -----------------------------------------------------------------------------------
@dataclass
class TilePlan:
    """The slide's tile grid at the model's resolution, plus where each heatmap cell lies."""

    grid: Any  # wsi_pipeline.tiling.TileGrid
    level: int  # pyramid level the reads come from
    level_downsample: float

    @property
    def rows(self) -> int:
        return self.grid.shape[0]

    @property
    def cols(self) -> int:
        return self.grid.shape[1]

    @property
    def tile_px(self) -> int:
        return int(self.grid.patch_size)

    @property
    def stride_px(self) -> int:
        return int(self.grid.stride)

    @property
    def cell_size0(self) -> float:
        """Side of a heatmap cell's footprint, level-0 px (the stride)."""
        return float(self.grid.stride0)

    @property
    def cell_um(self) -> float:
        return self.cell_size0 * float(self.grid.slide_mpp)

    def cell_geometry(self) -> Any:
        """Cell footprints: stride-sized squares centred on their tiles (= the tile at stride = patch)."""
        from wsi_pipeline.writers import CellGeometry

        inset = (self.grid.tile_size0 - self.grid.stride0) / 2.0
        return CellGeometry(self.grid.origin_x + inset, self.grid.origin_y + inset, self.cell_size0)

    def tile_boxes(self, cells: np.ndarray) -> np.ndarray:
        """Level-0 ``(minx, miny, width, height)`` of the tiles of ``cells`` (row, col)."""
        x, y = self.grid.cell_origin(cells[:, 0].astype(np.float64), cells[:, 1].astype(np.float64))
        size = np.full(len(cells), self.grid.tile_size0)
        return np.column_stack([x, y, size, size])

    def block_reader(self, reader: Any) -> Callable[[int, int, int, int], np.ndarray]:
        """``read_block(row0, col0, n_rows, n_cols)`` for the inference engine (model resolution)."""
        from wsi_pipeline.slide import read_region_at_mpp

        def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
            b = self.grid.block(row0, col0, row0 + n_rows, col0 + n_cols)
            return read_region_at_mpp(reader, b.x0, b.y0, b.width0, b.height0, b.out_w, b.out_h)

        return read_block


def plan_tiles(reader: Any, mpp: float, model: Any, options: InferenceOptions) -> TilePlan:
    """The grid of model tiles over ``reader`` (level-0 ``mpp`` um/px) and the level reads use."""
    from wsi_pipeline.tiling import PCAM_LABEL, TileGrid

    config = model.config
    patch = int(config.patch_size)
    width, height = reader.dimensions
    grid = TileGrid(
        slide_width=int(width),
        slide_height=int(height),
        slide_mpp=float(mpp),
        patch_size=patch,
        model_mpp=float(config.mpp),
        stride=int(options.stride) if options.stride else patch,
        label_size=min(PCAM_LABEL, patch),
    )
    level = reader.best_level_for_downsample(grid.scale)
    return TilePlan(grid=grid, level=level, level_downsample=float(reader.level_downsamples[level]))


# --- run -------------------------------------------------------------------------------------
def run_slide(
    slide_path: str | Path,
    out_root: str | Path,
    options: InferenceOptions | None = None,
    model: Any = None,
    progress: ProgressFn | None = None,
) -> SlideResult:
    """Analyse one slide and write ``out_root/<slide stem>/`` (see :mod:`wsi_pipeline.writers`).

    ``model`` is a :class:`~wsi_pipeline.models.io.LoadedModel` (``None``: the shipped default).
    Raises :class:`~wsi_pipeline.errors.SlideOpenError`, :class:`UnknownMppError`,
    :class:`NoTissueError`, :class:`SlideReadError`, :class:`OptionError` or
    :class:`OutputError`, each naming the slide; on failure nothing finished-looking is left.
    """
    from wsi_pipeline.aggregation import aggregate, build_heatmap, smoothing_window
    from wsi_pipeline.inference import TileInference, resolve_device
    from wsi_pipeline.models.io import load_model
    from wsi_pipeline.slide import open_slide, resolve_mpp, thumbnail
    from wsi_pipeline.slide.fast_blocks import fast_block_reader
    from wsi_pipeline.tissue import detect_tissue
    from wsi_pipeline.writers import atomic_output_dir

    t_start = time.perf_counter()
    slide_path = Path(slide_path)
    options = options or InferenceOptions()
    options.validate()
    device = resolve_device(options.device)
    if model is None:
        model = load_model(None, device=device)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    with open_slide(slide_path) as reader:
        mpp = resolve_mpp(reader, options.mpp)
        plan = plan_tiles(reader, mpp, model, options)
        if plan.grid.scale < MIN_SCALE:
            source = "--mpp" if options.mpp else "from the metadata"
            raise UnknownMppError(
                f"{slide_path}: {mpp:g} um/px ({source}) is implausibly coarse for a "
                f"{model.config.mpp:g} um/px model (a {plan.tile_px} px tile would span "
                f"{plan.grid.tile_size0:.2f} slide px); give the right value with --mpp"
            )
        if plan.rows * plan.cols == 0:
            raise NoTissueError(
                f"{slide_path}: slide ({reader.dimensions[0]}x{reader.dimensions[1]} px at {mpp:g} um/px) "
                f"is smaller than one {plan.tile_px} px tile at {model.config.mpp:g} um/px"
            )
        timings["open_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        mask = detect_tissue(reader, mpp)
        tiles = plan.grid.tiles()
        fractions = mask.tile_fractions(tiles.x, tiles.y, plan.grid.tile_size0, plan.grid.tile_size0)
        keep = (fractions >= options.tissue_threshold) & (fractions > 0)
        cells = np.column_stack([tiles.rows[keep], tiles.cols[keep]]).astype(np.int64)
        timings["tissue_s"] = time.perf_counter() - t0
        if len(cells) == 0:
            raise NoTissueError(
                f"{slide_path}: no tissue found (no tile has a tissue fraction >= "
                f"{options.tissue_threshold:g} among {len(tiles)} tiles)"
            )

        engine = TileInference(
            model, device=device, batch_size=options.batch_size, num_readers=options.num_readers
        )
        total = len(cells)
        step = None if progress is None else (lambda n: progress(n, total))
        # tifffile decoding of the level we read, where verified identical to OpenSlide
        block_source = fast_block_reader(reader, {plan.level})
        try:
            probs, stats = engine.run(
                cells, plan.block_reader(block_source), plan.tile_px, plan.stride_px, progress=step
            )
        finally:
            if block_source is not reader:
                block_source.close()

        t0 = time.perf_counter()
        thumb = thumbnail(reader, max_size=1024)
        slide_info = _slide_info(slide_path, reader, mpp, options)
        timings["thumbnail_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    heatmap = build_heatmap((plan.rows, plan.cols), cells, probs)
    agg = aggregate(
        heatmap, plan.cell_um, options.tumor_threshold, smoothing_window(plan.tile_px, plan.stride_px)
    )
    timings["aggregate_s"] = time.perf_counter() - t0

    summary = _summary(slide_info, plan, model, options, agg, stats, n_tiles_total=len(tiles))
    summary["tissue"] = {"n_tiles_tissue": int(len(cells)), "mask_shape": list(mask.mask.shape)}
    with atomic_output_dir(Path(out_root), slide_path.stem) as tmp:
        t0 = time.perf_counter()
        _write_outputs(tmp, summary, heatmap, cells, probs, agg, plan, thumb, slide_info)
        timings["write_s"] = time.perf_counter() - t0
        timings.update(read_s=stats.read_s, infer_s=stats.infer_s, wait_s=stats.wait_s)
        timings["total_s"] = time.perf_counter() - t_start
        summary["timings"] = {key: round(value, 4) for key, value in timings.items()}
        _write_summary(tmp, summary)  # last, so a summary means every other file is there
    return SlideResult(slide=slide_path, out_dir=Path(out_root) / slide_path.stem, summary=summary)


def _slide_info(slide_path: Path, reader: Any, mpp: float, options: InferenceOptions) -> dict[str, Any]:
    width, height = reader.dimensions
    return {
        "path": str(slide_path.resolve()),
        "name": slide_path.name,
        "format": reader.format_name,
        "dimensions": [int(width), int(height)],
        "level_count": int(reader.level_count),
        "level_downsamples": [float(d) for d in reader.level_downsamples],
        "mpp": float(mpp),
        "mpp_source": "option" if options.mpp is not None else "metadata",
    }


def _software() -> dict[str, str]:
    import torch

    return {
        "wsi_pipeline": __version__,
        "pipeline_version": str(PIPELINE_VERSION),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _summary(
    slide: dict[str, Any],
    plan: TilePlan,
    model: Any,
    options: InferenceOptions,
    agg: Any,
    stats: Any,
    n_tiles_total: int,
) -> dict[str, Any]:
    grid = plan.grid
    geometry = plan.cell_geometry()
    return {
        "slide": slide["path"],
        "slide_name": slide["name"],
        **agg.as_dict(),
        "n_tiles_total": int(n_tiles_total),
        "n_tiles_tissue": int(agg.n_tissue_cells),
        "mpp": slide["mpp"],
        "mpp_source": slide["mpp_source"],
        "level": plan.level,
        "level_downsample": plan.level_downsample,
        "slide_info": slide,
        "tiles": {
            "size_model_px": plan.tile_px,
            "size_level0_px": float(grid.tile_size0),
            "stride_model_px": plan.stride_px,
            "stride_level0_px": float(grid.stride0),
            "model_mpp": float(grid.model_mpp),
            "origin_level0": [float(grid.origin_x), float(grid.origin_y)],
        },
        "heatmap": {
            "shape": [plan.rows, plan.cols],
            "cell_size_um": plan.cell_um,
            "cell_size_level0_px": plan.cell_size0,
            "cell_origin_level0": [geometry.origin_x, geometry.origin_y],
        },
        "model": {
            "name": model.name,
            "architecture": model.config.architecture,
            "weights_sha256": model.weights_sha256,
            "path": str(model.path),
            "patch_size": int(model.config.patch_size),
            "mpp": float(model.config.mpp),
        },
        "options": options.to_dict(),
        "params": result_params(model, options),
        "params_hash": params_hash(model, options),
        "inference": {
            **stats.as_dict(),
            "batch_size": int(options.batch_size),
            "num_readers": int(options.num_readers),
        },
        "software": _software(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _heatmap_attrs(summary: dict[str, Any], plan: TilePlan) -> dict[str, Any]:
    return {
        "description": "tumour probability per tile; NaN = no tissue (not analysed)",
        "cell_size_um": plan.cell_um,
        "cell_size_level0_px": plan.cell_size0,
        "cell_origin_level0": summary["heatmap"]["cell_origin_level0"],
        "cell_footprint": (
            "cell (r, c) covers the level-0 square [x0 + c*s, x0 + (c+1)*s) x [y0 + r*s, y0 + (r+1)*s) "
            "with (x0, y0) = cell_origin_level0 and s = cell_size_level0_px: a stride-sized square "
            "centred on the tile (the tile itself when stride = tile size)"
        ),
        "tile_size_model_px": plan.tile_px,
        "tile_size_level0_px": float(plan.grid.tile_size0),
        "stride_model_px": plan.stride_px,
        "stride_level0_px": float(plan.grid.stride0),
        "origin_level0": summary["tiles"]["origin_level0"],
        "tile_origin": "tile of cell (r, c) has level-0 top-left origin_level0 + (c, r) * stride_level0_px",
        "slide": summary["slide"],
        "slide_size": summary["slide_info"]["dimensions"],
        "mpp": summary["mpp"],
        "model_mpp": float(plan.grid.model_mpp),
        "level": plan.level,
        "model_name": summary["model"]["name"],
        "model_architecture": summary["model"]["architecture"],
        "model_weights_sha256": summary["model"]["weights_sha256"],
        "params_hash": summary["params_hash"],
        "wsi_pipeline_version": __version__,
    }


def _write_outputs(
    folder: Path,
    summary: dict[str, Any],
    heatmap: np.ndarray,
    cells: np.ndarray,
    probs: np.ndarray,
    agg: Any,
    plan: TilePlan,
    thumb: np.ndarray,
    slide: dict[str, Any],
) -> None:
    from wsi_pipeline import writers

    geometry = plan.cell_geometry()
    writers.write_heatmap_zarr(folder / writers.HEATMAP_NAME, heatmap, _heatmap_attrs(summary, plan))
    order = np.lexsort((cells[:, 1], cells[:, 0]))
    writers.write_tiles_csv(folder / writers.TILES_NAME, plan.tile_boxes(cells[order]), probs[order])
    writers.write_geojson(folder / writers.GEOJSON_NAME, writers.tumour_features(agg.regions, geometry))
    width, height = slide["dimensions"]
    thumb_ds = (width / thumb.shape[1] + height / thumb.shape[0]) / 2.0
    title = f"{slide['name']}: slide score {agg.slide_score:.3f} ({agg.category})"
    writers.write_overlay_png(folder / writers.OVERLAY_NAME, thumb, thumb_ds, heatmap, geometry, title=title)
    summary["outputs"] = list(writers.OUTPUT_NAMES)


def _write_summary(folder: Path, summary: dict[str, Any]) -> None:
    from wsi_pipeline import writers

    writers.write_summary(folder / writers.SUMMARY_NAME, summary)
