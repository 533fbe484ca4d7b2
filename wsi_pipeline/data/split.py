"""Seeded stratified splits and samples (no slide ids are known, so strata are the labels)."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.errors import OptionError


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val), each class contributing ``round(val_fraction * n_class)``.

    Both arrays are sorted int64 and disjoint; together they cover every index. Same seed, same split.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0.0 < float(val_fraction) < 1.0:
        raise OptionError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_parts = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_val = int(round(val_fraction * len(members)))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_parts.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(val_parts)).astype(np.int64) if val_parts else np.zeros(0, np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).astype(np.int64), val


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` patches keeping the class proportions (all indices if ``n >= len``)."""
    labels = np.asarray(labels).reshape(-1)
    if n <= 0:
        raise OptionError(f"sample size must be positive, got {n}")
    if n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation so the per-class counts add up to exactly n.
    exact = counts * (n / len(labels))
    take = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    parts = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(parts)).astype(np.int64)
