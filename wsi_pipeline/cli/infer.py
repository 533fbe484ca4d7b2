"""``wsi-infer SLIDE...``: tumour heatmap, slide score and outputs for each slide."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from wsi_pipeline.cli.common import (
    CONTEXT,
    MppType,
    device_option,
    is_quiet,
    model_option,
    rule_options,
    run_cli,
    standard_options,
)
from wsi_pipeline.cli.progress import TileProgressBar
from wsi_pipeline.cli.slide_paths import SLIDE_EXTENSIONS, expand_slide_paths
from wsi_pipeline.errors import WsiPipelineError, one_line_error
from wsi_pipeline.files import check_distinct_slides
from wsi_pipeline.outdir import clean_stale_temp, output_folder_lock

if TYPE_CHECKING:
    from wsi_pipeline.models.io import LoadedModel
    from wsi_pipeline.options import InferenceOptions
    from wsi_pipeline.result import SlideResult

DEFAULT_OUT = Path("results")
log = logging.getLogger(__name__)

Echo = Callable[[str], object]


def infer_one(
    slide: Path,
    out_root: Path,
    options: InferenceOptions,
    model: LoadedModel,
    echo: Echo = click.echo,
    echo_err: Echo | None = None,
    progress: bool = True,
) -> SlideResult | None:
    """Run :func:`~wsi_pipeline.pipeline.run_slide` on one slide in this process, reporting one line.

    A bad slide (any :class:`WsiPipelineError`) costs one ``error:`` line on stderr and gives ``None``.
    """
    from wsi_pipeline.pipeline import run_slide

    bar = TileProgressBar(slide.name, enabled=progress)
    try:
        result = run_slide(slide, out_root, options, model, progress=bar.update)
    except WsiPipelineError as exc:
        bar.close()
        (echo_err or (lambda text: click.echo(text, err=True)))(f"error: {one_line_error(slide, exc)}")
        return None
    bar.close()
    s = result.summary
    echo(
        f"{slide.name}: slide_score {s.slide_score:.3f}, {s.diagnosis()['call']}, "
        f"{s.n_tiles_tissue} tissue tiles -> {result.out_dir}"
    )
    for warning in s.warnings:
        (echo_err or (lambda text: click.echo(text, err=True)))(f"warning: {slide.name}: {warning}")
    return result


def load_inference_model(model_path: Path | None, device: str) -> LoadedModel:
    """The model to run (``None`` = the shipped default), on the resolved device."""
    from wsi_pipeline.devices import resolve_device
    from wsi_pipeline.models.io import load_model

    return load_model(model_path, device=resolve_device(device))


@click.command("wsi-infer", context_settings=CONTEXT)
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_root",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_OUT,
    show_default=True,
    help="Output folder; each slide gets OUT/<slide name>/.",
)
@model_option()
@click.option(
    "--mpp",
    type=MppType(),
    default=None,
    show_default=False,
    help="Level-0 microns per pixel, for slides whose metadata lacks it (overrides metadata).",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=None,
    show_default=False,
    help=(
        "Tile step in model pixels (default: 32 for a dense-capable model such as dense_cnn, scored in "
        "dense passes; else the model's patch size, i.e. no overlap)."
    ),
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    help="Tiles per model call (lower it if memory is short).",
)
@device_option()
@click.option(
    "--tissue-threshold",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="Minimum tissue fraction for a tile to be analysed.",
)
@rule_options()
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="Inference precision: auto = bf16 where the CPU/GPU has it natively, it measures faster and "
    "agrees with fp32 within 0.01, else fp32 (recorded in summary.json).",
)
@click.option(
    "--num-readers", type=click.IntRange(min=1), default=2, show_default=True, help="Reader threads."
)
@click.option(
    "--progress/--no-progress", default=True, help="Show a progress bar (only when stderr is a terminal)."
)
@click.option(
    "--viewer/--no-viewer",
    default=True,
    help="Also write viewer.html + its slide pyramid at the model's resolution (~28 MB per cm2 of tissue).",
)
@click.option(
    "--tta",
    is_flag=True,
    help="Test-time augmentation: each tile's probability is the mean over its 8 flips/rotations "
    "(8x the model's cost; tile by tile, so no dense pass).",
)
@click.option(
    "-r", "--recursive", is_flag=True, help="Also take the slides in the subfolders of a folder given."
)
@click.option("--wait", is_flag=True, help="If another run writes to OUT, wait for it (default: stop).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    show_default=False,
    help="Dask worker processes on this machine (default: one per GPU, else one per two CPU cores).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    show_default=False,
    help="Run on an existing Dask cluster (e.g. tcp://head-node:8786) instead of starting one.",
)
def cli(
    slides: tuple[Path, ...],
    out_root: Path,
    model_path: Path | None,
    mpp: float | None,
    stride: int | None,
    batch_size: int,
    device: str,
    tissue_threshold: float,
    tumor_threshold: float | None,
    lesion_threshold: float | None,
    lesion_support_mm2: float | None,
    precision: str,
    num_readers: int,
    progress: bool,
    viewer: bool,
    tta: bool,
    recursive: bool,
    wait: bool,
    workers: int | None,
    scheduler: str | None,
) -> None:
    """Tumour heatmap (Zarr), slide score and outputs for each SLIDE (files or folders of slides).

    Writes OUT/<slide>/ with heatmap.zarr (OME-Zarr), summary.json, tiles.csv, tumor.geojson,
    tiles.geojson (QuPath detections), overlay.png and viewer.html (unless --no-viewer).
    A folder gives its slide files (by extension: .svs, .tif, .ndpi, .mrxs, .scn, .dcm, ...); what
    else it holds is named in a note; --recursive takes its subfolders' slides too.
    A slide that fails gets one line on stderr; the others still run; the exit code is 1 if any failed.
    A folder, several slides, --workers or --scheduler run on a Dask cluster (see docs/batch.md),
    skip slides already done from the same slide files with the same model and options (checked
    against each folder's manifest.json), and write OUT/run_summary.csv.
    One run at a time per OUT (lock file OUT/.wsi-pipeline.lock): a second stops with an error, or
    waits with --wait.
    """
    from wsi_pipeline.options import InferenceOptions
    from wsi_pipeline.tiling import check_stride

    options = InferenceOptions(
        mpp=mpp,
        stride=stride,
        batch_size=batch_size,
        device=device,
        tissue_threshold=tissue_threshold,
        tumor_threshold=tumor_threshold,
        lesion_threshold=lesion_threshold,
        lesion_support_mm2=lesion_support_mm2,
        num_readers=num_readers,
        precision=precision,
        viewer=viewer,
        tta=tta,
    )
    note = None if is_quiet() else lambda t: click.echo(t, err=True)
    paths = expand_slide_paths(slides, recursive, note=note)
    log.info("%d slide(s): %s", len(paths), ", ".join(str(p) for p in paths))
    check_distinct_slides(paths)
    show_progress = progress and not is_quiet()
    if use_dask_batch(slides, paths, workers, scheduler):
        run_dask_batch(paths, out_root, options, model_path, workers, scheduler, show_progress, wait)
        return
    (slide,) = paths
    model = load_inference_model(model_path, device)
    check_stride(options.stride, model.config.patch_size)
    with output_folder_lock(out_root, wait=wait, echo=note) as out_dir:  # before the slide's analysis
        clean_stale_temp(out_dir)  # left by killed runs (owner process gone)
        done = infer_one(slide, out_dir, options, model, progress=show_progress) is not None
    click.echo(
        f"{int(done)} of 1 slide(s) done; outputs in {Path(out_root).resolve()}"
        + ("" if done else "; 1 failed")
    )
    if not done:
        sys.exit(1)  # not click's Exit: run_cli runs click with standalone_mode=False


def use_dask_batch(
    inputs: Sequence[Path], paths: Sequence[Path], workers: int | None, scheduler: str | None
) -> bool:
    """Dask for a folder, several slides, or an explicit --workers/--scheduler; else in-process."""
    return workers is not None or bool(scheduler) or len(paths) > 1 or any(Path(p).is_dir() for p in inputs)


def run_dask_batch(
    paths: Sequence[Path],
    out_root: Path,
    options: InferenceOptions,
    model_path: Path | None,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    wait: bool = False,
) -> None:
    """The batch path of ``wsi-infer``: :func:`wsi_pipeline.batch.run_batch`; exit 1 if any slide failed."""
    from wsi_pipeline.batch.runner import run_batch

    report = run_batch(
        paths,
        out_root,
        options,
        model_path,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        wait=wait,
        echo=click.echo,
        echo_err=lambda text: click.echo(text, err=True),
    )
    n_ok = report.n_done + report.n_skipped
    click.echo(
        f"{n_ok} of {len(paths)} slide(s) done; outputs in {Path(out_root).resolve()}"
        + (f"; {report.n_skipped} skipped (already done)" if report.n_skipped else "")
        + (f"; {report.n_failed} failed" if report.n_failed else "")
    )
    if report.exit_code:
        sys.exit(1)


cli = standard_options("wsi-infer")(cli)

__all__ = ["SLIDE_EXTENSIONS", "cli", "expand_slide_paths", "infer_one", "main"]


def main() -> None:
    run_cli(cli)
