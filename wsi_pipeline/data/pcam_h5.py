"""The official PatchCamelyon HDF5 files: ``camelyonpatch_level_2_split_<split>_{x,y}.h5``.

``x`` is ``(N, 96, 96, 3) uint8`` (7 GB for train) and is read lazily; ``y`` is ``(N, 1, 1, 1)`` and is
loaded whole (one byte per patch). The published files are gzipped (``.h5.gz``) and must be gunzipped first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.data.images import PATCH_SIZE, format_offenders
from wsi_pipeline.errors import DatasetError

SPLITS = ("train", "valid", "test")
_NAME = re.compile(r"^(?P<prefix>.*)_(?P<split>train|valid|test)_(?P<kind>x|y)\.h5(?P<gz>\.gz)?$")
_GZIP_MAGIC = b"\x1f\x8b"


def pcam_file(root: Path, split: str, kind: str, prefix: str = "camelyonpatch_level_2_split") -> Path:
    return Path(root) / f"{prefix}_{split}_{kind}.h5"


def find_pcam_splits(folder: Path) -> dict[str, tuple[Path, Path | None]]:
    """Splits present in ``folder``: split -> (x path, y path or None). Includes ``.h5.gz`` names."""
    found: dict[str, dict[str, Path]] = {}
    for entry in sorted(Path(folder).iterdir()):
        m = _NAME.match(entry.name)
        if m:
            found.setdefault(m["split"], {})[m["kind"]] = entry
    return {s: (d["x"], d.get("y")) for s, d in found.items() if "x" in d}


def _gz_message(path: Path) -> str:
    return f"{path}: gzipped HDF5 is not read directly; gunzip it first (gunzip -k {path.name})"


def _check_not_gzipped(path: Path) -> None:
    if path.name.endswith(".gz"):
        raise DatasetError(_gz_message(path))
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if magic == _GZIP_MAGIC:
        raise DatasetError(f"{path}: file is gzip-compressed; gunzip it first (rename to .gz and gunzip)")


def _open_h5(path: Path):
    import h5py

    _check_not_gzipped(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file: {exc}") from exc


def _single_dataset(handle, path: Path, preferred: str):
    import h5py

    if preferred in handle and isinstance(handle[preferred], h5py.Dataset):
        return handle[preferred]
    arrays = [k for k in handle if isinstance(handle[k], h5py.Dataset)]
    if len(arrays) == 1:
        return handle[arrays[0]]
    raise DatasetError(f"{path}: expected an HDF5 dataset named {preferred!r}, found {sorted(handle)}")


class PCamH5Dataset(PatchDataset):
    """One PCam split; the x file is opened lazily (and reopened after pickling, e.g. in workers)."""

    def __init__(self, x_path: Path | str, y_path: Path | str):
        self.x_path, self.y_path = Path(x_path), Path(y_path)
        for p in (self.x_path, self.y_path):
            if not p.is_file() and not Path(str(p) + ".gz").is_file():
                raise DatasetError(f"{p}: PCam HDF5 file not found")
            if not p.is_file():
                raise DatasetError(f"{p}.gz: gzipped HDF5 is not read directly; gunzip it first")
        with _open_h5(self.x_path) as fx:
            x = _single_dataset(fx, self.x_path, "x")
            if x.ndim != 4 or x.shape[1:] != (PATCH_SIZE, PATCH_SIZE, 3) or x.dtype != np.uint8:
                raise DatasetError(
                    f"{self.x_path}: x has shape {x.shape} {x.dtype}, expected (N, 96, 96, 3) uint8"
                )
            self._x_name, n = x.name, int(x.shape[0])
        with _open_h5(self.y_path) as fy:
            y = _single_dataset(fy, self.y_path, "y")
            if y.shape[:1] != (n,) or int(np.prod(y.shape[1:], dtype=np.int64)) != 1:
                raise DatasetError(
                    f"{self.y_path}: y has shape {y.shape}, expected ({n}, 1, 1, 1) to match x"
                )
            labels = np.asarray(y[...]).reshape(-1)
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if len(bad):
            items = [f"h5:{i}={labels[i]}" for i in bad[:5]]
            listed = format_offenders(items, len(bad))
            raise DatasetError(f"{self.y_path}: labels must be 0 or 1; {len(bad)} bad entries: {listed}")
        if n == 0:
            raise DatasetError(f"{self.x_path}: dataset holds no patches")
        self._labels = labels.astype(np.int64)
        self._handle = None

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def ids(self) -> list[str]:
        return [f"h5:{i}" for i in range(len(self._labels))]

    def _x(self):
        if self._handle is None:
            self._handle = _open_h5(self.x_path)
        return self._handle[self._x_name]

    def source_stats(self) -> list[tuple[str, int, int]]:
        stats = [os.stat(p) for p in (self.x_path, self.y_path)]
        return [
            (str(p), st.st_size, st.st_mtime_ns)
            for p, st in zip((self.x_path, self.y_path), stats, strict=True)
        ]

    def read(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self._labels)
        if len(idx) == 0:
            return np.empty((0, PATCH_SIZE, PATCH_SIZE, 3), dtype=np.uint8)
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"index out of range for dataset of {n} patches")
        idx = np.where(idx < 0, idx + n, idx)
        uniq, inverse = np.unique(idx, return_inverse=True)
        x = self._x()
        try:
            lo, hi = int(uniq[0]), int(uniq[-1]) + 1
            if hi - lo <= 4 * len(uniq):  # dense: one contiguous read, then pick
                block = x[lo:hi][uniq - lo]
            else:  # sparse: one read per contiguous run
                breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
                runs = np.split(uniq, breaks)
                block = np.concatenate([x[int(r[0]) : int(r[-1]) + 1] for r in runs])
        except OSError as exc:
            raise DatasetError(f"{self.x_path}: cannot read patches {lo}..{hi - 1}: {exc}") from exc
        return np.ascontiguousarray(block[inverse])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def describe(self) -> dict:
        info = super().describe()
        info["path"] = str(self.x_path)
        return info


def open_pcam(path: Path | str, split: str | None = None) -> PCamH5Dataset:
    """``path`` is a folder of PCam files (pick ``split``) or one ``..._x.h5`` / ``..._y.h5`` file."""
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown PCam split {split!r}; choose one of {', '.join(SPLITS)}")
    if path.is_file() or path.name.endswith((".h5", ".h5.gz")):
        m = _NAME.match(path.name)
        if not m:
            raise DatasetError(f"{path}: not a PCam file name (expected ..._<split>_x.h5)")
        if m["gz"]:
            raise DatasetError(_gz_message(path))
        if split is not None and split != m["split"]:
            raise DatasetError(f"{path}: file is the {m['split']!r} split but split={split!r} was asked")
        x_path = path.with_name(f"{m['prefix']}_{m['split']}_x.h5")
        y_path = path.with_name(f"{m['prefix']}_{m['split']}_y.h5")
        return PCamH5Dataset(x_path, y_path)
    splits = find_pcam_splits(path)
    if not splits:
        raise DatasetError(f"{path}: no PCam files (camelyonpatch_level_2_split_<split>_x.h5) found")
    if split is None:
        if len(splits) > 1:
            raise DatasetError(
                f"{path}: holds PCam splits {', '.join(sorted(splits))}; choose one (split / --split)"
            )
        split = next(iter(splits))
    if split not in splits:
        raise DatasetError(f"{path}: no PCam {split!r} split here (found {', '.join(sorted(splits))})")
    x_file, y_file = splits[split]
    if y_file is None:
        raise DatasetError(f"{path}: labels file for the {split!r} split (..._{split}_y.h5) is missing")
    if x_file.name.endswith(".gz") or y_file.name.endswith(".gz"):
        raise DatasetError(f"{path}: the {split!r} split is gzipped (.h5.gz); gunzip the files first")
    return PCamH5Dataset(x_file, y_file)


def is_pcam_path(path: Path) -> bool:
    if path.is_dir():
        return bool(find_pcam_splits(path))
    return bool(_NAME.match(path.name))
