"""Run a patch model over a dataset: chunked reads (prefetched in a thread), optional 8-fold TTA."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from wsi_pipeline.d4 import N_VIEWS, NHWC, dihedral
from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.errors import OptionError
from wsi_pipeline.models.io import LoadedModel


def predict_patches(
    model: LoadedModel, patches: np.ndarray, batch_size: int = 256, tta: bool = False
) -> np.ndarray:
    """Tumour probabilities for uint8 NHWC ``patches``; with ``tta`` the mean over the 8 dihedral views."""
    if not tta:
        return model.predict_proba(patches, batch_size=batch_size)
    data = torch.from_numpy(np.ascontiguousarray(patches))
    total = np.zeros(len(patches), dtype=np.float64)
    for k in range(N_VIEWS):
        total += model.predict_proba(dihedral(data, k, NHWC), batch_size=batch_size)
    return (total / N_VIEWS).astype(np.float32)


def predict_dataset(
    model: LoadedModel,
    dataset: PatchDataset,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    tta: bool = False,
    progress: bool = False,
    read_chunk: int = 1024,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """float32 tumour probabilities for ``indices`` of ``dataset`` (all by default), in that order;
    ``transform`` (e.g. a re-staining) is applied to each chunk of uint8 patches first.

    The next chunk is read (decoded) in a background thread while the model runs on the current one.
    """
    if batch_size <= 0:
        raise OptionError(f"batch size must be positive, got {batch_size}")
    idx = np.arange(len(dataset), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    out = np.empty(len(idx), dtype=np.float32)
    chunk = max(batch_size, read_chunk)
    starts = list(range(0, len(idx), chunk))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(idx), desc="evaluating" + (" (TTA x8)" if tta else ""), unit="patch", disable=None
        )
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(dataset.read, idx[0:chunk]) if starts else None
        for k, start in enumerate(starts):
            assert pending is not None  # submitted before the loop (starts is not empty) and on each step
            patches = pending.result()
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                pending = reader.submit(dataset.read, idx[nxt : nxt + chunk])
            if transform is not None:
                patches = transform(patches)
            out[start : start + len(patches)] = predict_patches(model, patches, batch_size, tta)
            if bar is not None:
                bar.update(len(patches))
    if bar is not None:
        bar.close()
    return out
