"""A view on some indices of another dataset (splits, samples, outlier-free sets)."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.data.base import PatchDataset


class SubsetDataset(PatchDataset):
    """``base`` restricted to ``indices`` (in the given order)."""

    def __init__(self, base: PatchDataset, indices: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise IndexError(f"subset indices out of range for dataset of {len(base)} patches")
        self._labels = base.labels[self.indices]

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def ids(self) -> list[str]:
        base_ids = self.base.ids
        return [base_ids[i] for i in self.indices]

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.base.read(self.indices[np.asarray(indices, dtype=np.int64)])

    def source_stats(self) -> list[tuple[str, int, int]]:
        return self.base.source_stats()

    def describe(self) -> dict:
        info = self.base.describe()
        info.update(super().describe())
        info["source"] = self.base.describe().get("source")
        info["subset_of"] = len(self.base)
        return info
