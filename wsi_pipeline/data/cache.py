"""Decode once: a uint8 copy of a patch dataset on disk, memory-mapped, keyed on its source.

Decoding JPEG/TIFF patch files costs more than a training step of a small network, so training
and evaluation read patches from ``images.npy`` (``(N, 96, 96, 3)`` uint8, opened with
``mmap_mode='r'``: the operating system pages it in, memory stays bounded for the 220k/327k
patch sets). The cache is built once (with a progress bar) into a temporary folder that is
renamed when complete, so an interrupted build leaves nothing that looks finished. Its key
covers the dataset's layout, ids, labels, source files (size and modification time) and the
cached indices: a changed dataset, or another sample of it, gets its own cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.errors import DatasetError
from wsi_pipeline.files import user_cache_dir

CACHE_VERSION = 1
IMAGES_FILE = "images.npy"
META_FILE = "meta.json"
_CHUNK = 1024


def cache_root() -> Path:
    """``$WSI_PIPELINE_CACHE/patches`` or ``~/.cache/wsi_pipeline/patches``."""
    return user_cache_dir() / "patches"


def cache_key(dataset: PatchDataset, indices: np.ndarray) -> str:
    """sha256 over what the cached pixels depend on (cheap: ids, labels and file stats only)."""
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION} {type(dataset).__name__} {dataset.patch_size}\n".encode())
    digest.update(json.dumps(dataset.describe(), sort_keys=True, default=str).encode())
    digest.update("\n".join(dataset.ids).encode())
    digest.update(np.ascontiguousarray(dataset.labels, dtype=np.int64).tobytes())
    for path, size, mtime_ns in dataset.source_stats():
        digest.update(f"{path}\0{size}\0{mtime_ns}\n".encode())
    digest.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PatchCache:
    """Cached patches ``images[k]`` of dataset index ``indices[k]`` with label ``labels[k]``."""

    folder: Path
    key: str
    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.indices)
        if self.images.shape[0] != n or len(self.labels) != n:
            raise DatasetError(f"{self.folder}: cache holds {self.images.shape[0]} images for {n} indices")

    def __len__(self) -> int:
        return len(self.indices)


def open_cache(
    dataset: PatchDataset,
    indices: np.ndarray | None = None,
    root: Path | None = None,
    progress: bool = False,
) -> PatchCache:
    """The cache of ``indices`` (default: all) of ``dataset``, built first if missing or stale."""
    idx = np.arange(len(dataset), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    key = cache_key(dataset, idx)
    root = Path(root) if root is not None else cache_root()
    folder = root / key[:32]
    cache = _load(folder, key, dataset, idx)
    if cache is None:
        _build(folder, dataset, idx, key, progress)
        cache = _load(folder, key, dataset, idx)
        if cache is None:
            raise DatasetError(f"{folder}: patch cache was written but cannot be read back")
    return cache


def _load(folder: Path, key: str, dataset: PatchDataset, idx: np.ndarray) -> PatchCache | None:
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("key") != key:
            return None
        images = np.load(folder / IMAGES_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return None
    side = dataset.patch_size
    if images.dtype != np.uint8 or images.shape != (len(idx), side, side, 3):
        return None
    return PatchCache(folder, key, images, dataset.labels[idx].copy(), idx)


def _build(folder: Path, dataset: PatchDataset, idx: np.ndarray, key: str, progress: bool) -> None:
    side = dataset.patch_size
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    except OSError as exc:
        raise DatasetError(f"{folder.parent}: cannot create patch cache: {exc.strerror or exc}") from exc
    bar = None
    try:
        out = np.lib.format.open_memmap(
            tmp / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(len(idx), side, side, 3)
        )
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=len(idx), desc="decoding patches once (cache)", unit="patch", leave=False, disable=None
            )
        for start in range(0, len(idx), _CHUNK):
            part = idx[start : start + _CHUNK]
            out[start : start + len(part)] = dataset.read(part)
            if bar is not None:
                bar.update(len(part))
        out.flush()
        del out
        meta = {"key": key, "version": CACHE_VERSION, "n": int(len(idx)), "source": dataset.describe()}
        (tmp / META_FILE).write_text(json.dumps(meta, default=str) + "\n")
        if folder.exists():  # stale (other key or unreadable): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / META_FILE).is_file():  # not another process finishing the same cache
                raise
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot write patch cache: {exc.strerror or exc}") from exc
    finally:
        if bar is not None:
            bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class CachedDataset(PatchDataset):
    """A :class:`PatchCache` seen as a dataset (row ``k`` = cached patch ``k``)."""

    def __init__(self, cache: PatchCache, ids: list[str] | None = None) -> None:
        self.cache = cache
        self._ids = ids if ids is not None else [f"cache:{int(i)}" for i in cache.indices]

    @property
    def labels(self) -> np.ndarray:
        return self.cache.labels

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def patch_size(self) -> int:
        return int(self.cache.images.shape[1])

    def read(self, indices: np.ndarray) -> np.ndarray:
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.cache.images.shape[1:]), dtype=np.uint8)
        out[order] = self.cache.images[rows[order]]
        return out


def cache_dataset(cache: PatchCache) -> CachedDataset:
    return CachedDataset(cache)
