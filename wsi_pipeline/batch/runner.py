"""Run many slides on a Dask cluster: plan (resume), submit one task per slide, gather, report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_pipeline.batch.cluster import DEFAULT_ALLOWED_FAILURES, open_client, plan_workers
from wsi_pipeline.batch.report import BatchReport, SlideRow, write_run_summary
from wsi_pipeline.batch.resume import ResumePlan, plan_resume
from wsi_pipeline.batch.worker import process_slide
from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import OptionError, one_line
from wsi_pipeline.files import check_distinct_slides
from wsi_pipeline.models.io import load_model, model_folder
from wsi_pipeline.options import InferenceOptions, params_hash
from wsi_pipeline.outdir import clean_stale_temp, output_folder_lock
from wsi_pipeline.tiling import check_stride

if TYPE_CHECKING:
    from distributed import Client

Echo = Callable[[str], object]


def resolve_model_path(model_path: str | Path | None) -> Path:
    """Absolute model folder (workers on other nodes need a path, not ``None``)."""
    return model_folder(model_path).resolve()


def _failure_text(slide: Path, exc: BaseException) -> str:
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return f"{slide}: worker process died every time it ran this slide (crash or out of memory?)"
    return f"{slide}: {type(exc).__name__}: {one_line(exc)}"


def _submit_and_gather(
    client: Client,
    todo: list[Path],
    out_root: Path,
    options: InferenceOptions,
    model_path: Path,
    torch_threads: int | None,
    progress: bool,
) -> dict[Path, SlideRow]:
    from distributed import as_completed
    from tqdm import tqdm

    futures = {}
    stamp = f"{time.time_ns():x}"
    for i, slide in enumerate(todo):
        future = client.submit(
            process_slide,
            str(slide.absolute()),  # workers may run in another folder or on another node
            str(out_root.absolute()),
            options,
            str(model_path),
            torch_threads,
            key=f"wsi-slide-{i}-{slide.stem}-{stamp}",
            pure=False,
            retries=0,
        )
        futures[future] = slide
    rows: dict[Path, SlideRow] = {}
    bar = tqdm(
        total=len(todo), unit="slide", desc="slides", disable=None if progress else True, dynamic_ncols=True
    )
    try:
        for future in as_completed(list(futures)):
            slide = futures[future]
            exc = future.exception()
            if exc is None:
                rows[slide] = future.result()
            else:
                rows[slide] = SlideRow(slide=str(slide), status="failed", error=_failure_text(slide, exc))
            n_failed = sum(r.status == "failed" for r in rows.values())
            bar.set_postfix(failed=n_failed, refresh=False)
            bar.update(1)
            future.release()
    except BaseException:
        client.cancel(list(futures))  # Ctrl-C: stop queued slides; outputs stay atomic
        raise
    finally:
        bar.close()
    return rows


def _redo_note(plan: ResumePlan) -> str:
    shown = [f"{slide.stem} ({why})" for slide, why in list(plan.redo.items())[:3]]
    more = f", ... ({len(plan.redo) - 3} more)" if len(plan.redo) > 3 else ""
    return f"Redoing {len(plan.redo)} slide(s) whose earlier result does not match: {', '.join(shown)}{more}."


def run_batch(
    slides: Sequence[str | Path],
    out_root: str | Path,
    options: InferenceOptions | None = None,
    model_path: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    resume: bool = True,
    wait: bool = False,
    progress: bool = True,
    allowed_failures: int = DEFAULT_ALLOWED_FAILURES,
    connect_timeout: float = 30.0,
    echo: Echo = print,
    echo_err: Echo | None = None,
) -> BatchReport:
    """Process ``slides`` into ``out_root`` on a Dask cluster, one task per slide.

    Starts a local cluster of worker processes (``workers`` CPU workers, or one per GPU) unless
    ``scheduler`` gives the address of a running one. Holds ``out_root``'s lock for the whole run
    (another run on it: :class:`OutputError`, or wait for it with ``wait``). Slides whose outputs are
    complete, intact and made from the same slide file with the same model and parameters are
    skipped (``resume``). A bad slide fails alone and is recorded; a worker that dies mid-slide gets
    that slide rerun elsewhere. Writes ``run_summary.csv``/``.json`` into ``out_root`` and returns
    the report. Progress goes to ``echo``, one ``error: ...`` line per failed slide and one
    ``warning: ...`` line per slide warning to ``echo_err`` (default: stderr).
    """
    started = time.perf_counter()
    options = options or InferenceOptions()
    if workers is not None and scheduler:
        raise OptionError(
            "--workers starts a local cluster; with --scheduler the cluster's own workers are used"
        )
    if scheduler is None:  # local workers: the device must exist here (InferenceOptions checked its syntax)
        resolve_device(options.device)
    slide_paths = [Path(s) for s in slides]
    if not slide_paths:
        raise OptionError("no slides to process")
    check_distinct_slides(slide_paths)
    with output_folder_lock(out_root, wait=wait, echo=echo) as out_dir:
        model_dir = resolve_model_path(model_path)
        model = load_model(model_dir, device="cpu")
        check_stride(options.stride, model.config.patch_size)  # once, not once per slide
        run_hash = params_hash(model, options)
        stale = clean_stale_temp(out_dir)
        if stale:
            echo(f"Removed {len(stale)} stale temporary folder(s) left by an earlier interrupted run.")
        plan = plan_resume(slide_paths, out_dir, run_hash, resume=resume, options=options)
        if plan.skipped:
            n = len(plan.skipped)
            echo(f"Skipped {n} slide(s) already done from the same files, model and parameters.")
        if plan.redo:
            echo(_redo_note(plan))

        report = BatchReport(out_root=out_dir, params_hash=run_hash, stale_removed=len(stale))
        rows: dict[Path, SlideRow] = {}
        for slide, summary in plan.skipped.items():
            rows[slide] = SlideRow(
                slide=str(slide),
                status="skipped",
                slide_score=summary.slide_score,
                n_tiles_tissue=summary.n_tiles_tissue,
                seconds=0.0,
                warnings=summary.warnings,
                category=summary.category,
            )
        if plan.todo:
            local_plan = None if scheduler else plan_workers(workers, options.device)
            with open_client(
                scheduler,
                local_plan,
                allowed_failures=allowed_failures,
                connect_timeout=connect_timeout,
                echo=echo,
            ) as client:
                report.n_workers = len(client.scheduler_info()["workers"])
                torch_threads = local_plan.torch_threads if local_plan else None
                rows.update(
                    _submit_and_gather(
                        client, plan.todo, out_dir, options, model_dir, torch_threads, progress
                    )
                )
            clean_stale_temp(out_dir)  # temp folders of workers killed mid-slide during this run
        report.rows = [rows[slide] for slide in slide_paths]
        report.wall_seconds = time.perf_counter() - started
        write_run_summary(report)
    echo(report.one_line() + f"; summary: {report.csv_path}")
    echo_err = echo_err or (lambda text: print(text, file=sys.stderr))
    for row in report.rows:
        if row.status == "failed":
            echo_err(f"error: {row.error}")
        for warning in row.warnings:
            echo_err(f"warning: {Path(row.slide).name}: {warning}")
    return report
