"""The slide task that runs inside a Dask worker process.

The model is loaded once per worker process (cached by model folder + device) and reused for
every slide the worker gets. A bad slide (any :class:`WsiPipelineError`) is caught here and
reported as ``status="failed"`` with a one-line error, so Dask does not retry it; a worker that
dies mid-slide is handled by the scheduler, which reruns the task on another worker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import torch

from wsi_pipeline.batch.cluster import TORCH_THREADS_ENV
from wsi_pipeline.batch.report import SlideRow
from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import WsiPipelineError, one_line_error
from wsi_pipeline.models.io import LoadedModel, load_model
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.pipeline import run_slide

_MODEL_CACHE: dict[tuple[str, str], LoadedModel] = {}
_LOCK = threading.Lock()


def configure_torch_threads(threads: int | None) -> None:
    """Size torch's intra-op pool: explicit value, else ``$WSI_TORCH_THREADS``, else unchanged."""
    if threads is None:
        env = os.environ.get(TORCH_THREADS_ENV, "")
        threads = int(env) if env.isdigit() and int(env) > 0 else None
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def get_model(model_path: str | None, device: torch.device) -> LoadedModel:
    """This process's cached :class:`LoadedModel` for ``(model_path, device)``."""
    key = (str(model_path), str(device))
    with _LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = load_model(model_path, device=device)
            _MODEL_CACHE[key] = model
    return model


def process_slide(
    slide_path: str,
    out_root: str,
    options: InferenceOptions,
    model_path: str | None,
    torch_threads: int | None = None,
) -> SlideRow:
    """Run one slide; return its (small, picklable) row of the run summary."""
    start = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        configure_torch_threads(torch_threads)
        model = get_model(model_path, resolve_device(options.device))
        summary = run_slide(Path(slide_path), Path(out_root), options, model).summary
    except WsiPipelineError as exc:
        seconds = round(time.perf_counter() - start, 3)
        return SlideRow(
            slide_path, "failed", seconds=seconds, error=one_line_error(slide_path, exc), worker=worker
        )
    seconds = round(time.perf_counter() - start, 3)
    return SlideRow(
        slide_path,
        "done",
        summary.slide_score,
        summary.n_tiles_tissue,
        seconds,
        worker=worker,
        warnings=summary.warnings,
        category=summary.category,
    )
