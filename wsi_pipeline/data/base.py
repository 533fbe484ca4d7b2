"""The patch-dataset contract used by training and evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from wsi_pipeline.pcam import PCAM_PATCH


class PatchDataset(ABC):
    """Labelled RGB patches, read lazily so that 220k-330k patch sets stream in bounded memory."""

    @property
    @abstractmethod
    def labels(self) -> np.ndarray:
        """int64 array ``(N,)`` of 0 (normal) / 1 (tumour), cheap to access."""

    @property
    @abstractmethod
    def ids(self) -> list[str]:
        """A stable identifier per patch (file stem, or ``h5:<index>``)."""

    @abstractmethod
    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 array ``(len(indices), 96, 96, 3)`` RGB for the given indices."""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def patch_size(self) -> int:
        return PCAM_PATCH

    def source_stats(self) -> list[tuple[str, int, int]]:
        """``(path, size, mtime_ns)`` of the files the pixels come from (cache keys); none by default."""
        return []

    def describe(self) -> dict:
        """Summary stored in the model config: size and class balance."""
        labels = self.labels
        return {"n": int(len(labels)), "n_tumor": int(labels.sum()), "source": type(self).__name__}
