"""Data preparation for a training run: sample, decode once into the cache, drop outliers, split,
input statistics, stain-normalisation reference and the training patches' domain statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_pipeline.data import open_patch_dataset, stratified_sample, stratified_split
from wsi_pipeline.data.cache import PatchCache, cache_dataset, open_cache
from wsi_pipeline.domain import DEFAULT_PATCHES, DomainStats, domain_statistics
from wsi_pipeline.errors import DatasetError
from wsi_pipeline.training.config import TrainConfig

#: Input mean/std are estimated on at most this many training patches.
STATS_SAMPLE = 20_000
STAIN_REFERENCE = 256


@dataclass(frozen=True)
class TrainData:
    """Cached patches and the run's split: ``train_rows`` / ``val_rows`` index ``cache.images``."""

    cache: PatchCache
    train_rows: np.ndarray
    val_rows: np.ndarray
    mean: list[float]
    std: list[float]
    stain: dict[str, Any] | None
    summary: dict[str, Any]
    domain: DomainStats | None = None  # for the out-of-domain warning at inference

    @property
    def images(self) -> np.ndarray:
        return self.cache.images

    @property
    def labels(self) -> np.ndarray:
        return self.cache.labels

    @property
    def val_labels(self) -> np.ndarray:
        return self.cache.labels[self.val_rows]


def prepare_data(
    data_path: Path, config: TrainConfig, cache_root: Path | None = None, progress: bool = True
) -> TrainData:
    """Open the dataset and get everything the epoch loop needs (see the module docstring)."""
    dataset = open_patch_dataset(data_path)
    summary: dict[str, Any] = {"path": str(data_path), **dataset.describe()}
    indices = np.arange(len(dataset), dtype=np.int64)
    if config.max_patches is not None and config.max_patches < len(dataset):
        indices = stratified_sample(dataset.labels, config.max_patches, seed=config.seed)
        summary["sampled"] = int(len(indices))
    cache = open_cache(dataset, indices, root=cache_root, progress=progress)
    rows = np.arange(len(cache), dtype=np.int64)
    if config.remove_outliers:
        from wsi_pipeline.data.outliers import find_outliers

        report = find_outliers(cache_dataset(cache), progress=progress)
        summary["outliers"] = report.summary()
        rows = report.keep
    labels = cache.labels[rows]
    if len(np.unique(labels)) < 2:
        raise DatasetError(
            f"{data_path}: training needs both classes, found only label(s) {np.unique(labels)}"
        )
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_pos, val_pos = stratified_split(labels, config.val_fraction, seed=split_seed)
    train_rows, val_rows = rows[train_pos], rows[val_pos]
    summary["split"] = {
        "method": "stratified_split",
        "val_fraction": config.val_fraction,
        "seed": split_seed,
        "n_train": int(len(train_rows)),
        "n_val": int(len(val_rows)),
        "n_val_tumor": int(cache.labels[val_rows].sum()),
    }
    rng = np.random.default_rng(config.seed)
    if config.input_norm == "dataset":
        mean, std = channel_stats(cache.images, _subsample(train_rows, STATS_SAMPLE, rng))
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    stain = None
    if config.stain_normalization:
        from wsi_pipeline.models.stain import fit_normalizer

        reference = cache.images[_subsample(train_rows, STAIN_REFERENCE, rng)]
        stain = fit_normalizer(config.stain_normalization, reference, seed=config.seed).to_dict()
    sample = _subsample(train_rows, DEFAULT_PATCHES, np.random.default_rng(config.seed))
    domain = domain_statistics(cache.images[sample], source=f"{len(sample)} training patches")
    return TrainData(cache, train_rows, val_rows, mean, std, stain, summary, domain)


def _subsample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= n:
        return np.sort(rows)
    return np.sort(rng.choice(rows, size=n, replace=False))


def channel_stats(images: np.ndarray, rows: np.ndarray, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (RGB in [0, 1]) of ``images[rows]``, chunk by chunk."""
    sums = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, len(rows), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[rows[start : start + chunk]]))
        x = x.to(torch.float64).div_(255.0).reshape(-1, 3)
        sums += x.sum(0)
        squares += (x * x).sum(0)
        count += len(x)
    mean = sums / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(1e-8).sqrt()
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]
