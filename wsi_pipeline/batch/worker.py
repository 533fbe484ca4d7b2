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
from typing import Any

from wsi_pipeline.batch.cluster import TORCH_THREADS_ENV
from wsi_pipeline.errors import WsiPipelineError, one_line, one_line_error  # noqa: F401  (one_line re-exported)

_MODEL_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def configure_torch_threads(threads: int | None) -> None:
    """Size torch's intra-op pool: explicit value, else ``$WSI_TORCH_THREADS``, else unchanged."""
    if threads is None:
        env = os.environ.get(TORCH_THREADS_ENV, "")
        threads = int(env) if env.isdigit() and int(env) > 0 else None
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def get_model(model_path: str | None, device: Any) -> Any:
    """This process's cached :class:`LoadedModel` for ``(model_path, device)``."""
    from wsi_pipeline.models.io import load_model

    key = (str(model_path), device)
    with _LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = load_model(model_path, device=device)
            _MODEL_CACHE[key] = model
    return model


def process_slide(
    slide_path: str,
    out_root: str,
    options: dict[str, Any],
    model_path: str | None,
    torch_threads: int | None = None,
) -> dict[str, Any]:
    """Run one slide; return a small, picklable dict describing the outcome."""
    from wsi_pipeline.inference import resolve_device
    from wsi_pipeline.pipeline import InferenceOptions, run_slide

    start = time.perf_counter()
    outcome: dict[str, Any] = {
        "slide": slide_path,
        "status": "failed",
        "slide_score": None,
        "n_tiles_tissue": None,
        "seconds": None,
        "error": "",
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    try:
        configure_torch_threads(torch_threads)
        opts = InferenceOptions(**options)
        model = get_model(model_path, resolve_device(opts.device))
        result = run_slide(Path(slide_path), Path(out_root), opts, model)
        summary = result.summary or {}
        outcome.update(
            status="done",
            slide_score=summary.get("slide_score"),
            n_tiles_tissue=summary.get("n_tiles_tissue"),
        )
    except WsiPipelineError as exc:
        outcome["error"] = one_line_error(slide_path, exc)
    outcome["seconds"] = round(time.perf_counter() - start, 3)
    return outcome
