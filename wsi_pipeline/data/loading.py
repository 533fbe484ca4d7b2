"""Streaming helpers: iterate a dataset in chunks, or load a small one into memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from wsi_pipeline.data.base import PatchDataset


def iter_batches(
    dataset: PatchDataset, indices: np.ndarray | None = None, batch_size: int = 512
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, patches)`` chunks in the given order; memory stays at one chunk."""
    idx = np.arange(len(dataset), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        yield chunk, dataset.read(chunk)


def load_arrays(
    dataset: PatchDataset, indices: np.ndarray | None = None, chunk: int = 1024, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read patches (all, or ``indices``) into one uint8 ``(n, 96, 96, 3)`` array plus int64 labels.

    Image-file datasets decode with a thread pool inside ``read``; about 27 KB of memory per patch
    (9.5k patches: 260 MB), so use it only for sets that fit in memory.
    """
    idx = np.arange(len(dataset), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    out = np.empty((len(idx), dataset.patch_size, dataset.patch_size, 3), dtype=np.uint8)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(idx), desc="loading patches", unit="patch", leave=False, disable=None)
    for start in range(0, len(idx), chunk):
        part = idx[start : start + chunk]
        out[start : start + len(part)] = dataset.read(part)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return out, dataset.labels[idx].copy()
