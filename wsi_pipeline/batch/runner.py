"""Run many slides on a Dask cluster: plan (resume), submit one task per slide, gather, report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_pipeline.batch.cluster import DEFAULT_ALLOWED_FAILURES, open_client, plan_workers
from wsi_pipeline.batch.report import BatchReport, SlideRow, write_run_summary
from wsi_pipeline.batch.resume import clean_stale_temp, plan_resume
from wsi_pipeline.batch.worker import process_slide
from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import OptionError, OutputError, one_line
from wsi_pipeline.files import check_unique_stems
from wsi_pipeline.models.io import load_model, model_folder
from wsi_pipeline.options import InferenceOptions, params_hash

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


def run_batch(
    slides: Sequence[str | Path],
    out_root: str | Path,
    options: InferenceOptions | None = None,
    model_path: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    allowed_failures: int = DEFAULT_ALLOWED_FAILURES,
    connect_timeout: float = 30.0,
    echo: Echo = print,
    echo_err: Echo | None = None,
) -> BatchReport:
    """Process ``slides`` into ``out_root`` on a Dask cluster, one task per slide.

    Starts a local cluster of worker processes (``workers`` CPU workers, or one per GPU) unless
    ``scheduler`` gives the address of a running one. Slides whose outputs are complete and made
    with the same model and parameters are skipped (``resume``). A bad slide fails alone and is
    recorded; a worker that dies mid-slide gets that slide rerun elsewhere. Writes
    ``run_summary.csv``/``.json`` into ``out_root`` and returns the report. Progress goes to
    ``echo``, one ``error: ...`` line per failed slide to ``echo_err`` (default: stderr).
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
    check_unique_stems(slide_paths)
    out_root = Path(out_root)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_root}: cannot create output folder: {exc}") from exc

    model_dir = resolve_model_path(model_path)
    run_hash = params_hash(load_model(model_dir, device="cpu"), options)
    stale = clean_stale_temp(out_root)
    if stale:
        echo(f"Removed {len(stale)} stale temporary folder(s) left by an earlier interrupted run.")
    plan = plan_resume(slide_paths, out_root, run_hash, resume=resume, options=options)
    if plan.skipped:
        echo(f"Skipped {len(plan.skipped)} slide(s) already done with the same model and parameters.")

    report = BatchReport(out_root=out_root, params_hash=run_hash, stale_removed=len(stale))
    rows: dict[Path, SlideRow] = {}
    for slide, summary in plan.skipped.items():
        rows[slide] = SlideRow(
            slide=str(slide),
            status="skipped",
            slide_score=summary.slide_score,
            n_tiles_tissue=summary.n_tiles_tissue,
            seconds=0.0,
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
                _submit_and_gather(client, plan.todo, out_root, options, model_dir, torch_threads, progress)
            )
        clean_stale_temp(out_root)  # temp folders of workers killed mid-slide during this run
    report.rows = [rows[slide] for slide in slide_paths]
    report.wall_seconds = time.perf_counter() - started
    write_run_summary(report)
    echo(report.one_line() + f"; summary: {report.csv_path}")
    echo_err = echo_err or (lambda text: print(text, file=sys.stderr))
    for row in report.rows:
        if row.status == "failed":
            echo_err(f"error: {row.error}")
    return report
