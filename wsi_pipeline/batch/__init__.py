"""Batch processing of many slides on a Dask cluster (local worker processes or a remote scheduler).

``run_batch(slides, out_root, options, model_path, workers=None, scheduler=None) -> BatchReport``;
see docs/batch.md.
"""

from __future__ import annotations

__all__ = ["BatchReport", "SlideRow", "run_batch"]


def __getattr__(name: str) -> object:  # lazy: importing the package must not start dask/torch
    if name == "run_batch":
        from wsi_pipeline.batch.runner import run_batch

        return run_batch
    if name in ("BatchReport", "SlideRow"):
        from wsi_pipeline.batch import report

        return getattr(report, name)
    raise AttributeError(name)
