"""A dataset held in memory (e.g. after :func:`~wsi_pipeline.data.load_arrays`), so that outlier scans,
splits and evaluation can reuse already-decoded patches instead of decoding files again."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.errors import DatasetError


class ArrayDataset(PatchDataset):
    """uint8 ``(N, 96, 96, 3)`` images with int64 0/1 labels."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, ids: list[str] | None = None, source: str = ""
    ):
        images = np.asarray(images)
        labels = np.asarray(labels).reshape(-1)
        if images.ndim != 4 or images.shape[1:] != (96, 96, 3) or images.dtype != np.uint8:
            raise DatasetError(f"images must be uint8 (N, 96, 96, 3), got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise DatasetError("labels must be 0 or 1")
        if ids is not None and len(ids) != len(images):
            raise DatasetError(f"{len(images)} images but {len(ids)} ids")
        self.images = images
        self._labels = labels.astype(np.int64)
        self._ids = ids
        self.source = source

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def ids(self) -> list[str]:
        return self._ids if self._ids is not None else [f"mem:{i}" for i in range(len(self._labels))]

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def describe(self) -> dict:
        info = super().describe()
        if self.source:
            info["source"] = self.source
        return info
