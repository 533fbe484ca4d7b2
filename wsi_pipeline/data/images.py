"""Datasets made of one image file per patch (Kaggle ``train/<id>.tif`` or class folders).

Files are decoded lazily in :meth:`ImageFileDataset.read` (threaded, PIL releases the GIL while
decoding). Construction only lists files; :meth:`ImageFileDataset.check_headers` reads image headers
(size and mode, no pixel decode) to catch wrong-size or unreadable files early and cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.errors import DatasetError
from wsi_pipeline.pcam import PCAM_PATCH as PATCH_SIZE

IMAGE_EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
#: Below this many files every header is checked when a dataset is opened; above, a spread sample.
FULL_CHECK_LIMIT = 20_000
SAMPLE_CHECK_COUNT = 256
#: How many offenders an error message names.
MAX_LISTED = 5


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def format_offenders(items: Sequence[str], total: int | None = None) -> str:
    """``'a, b, c, ... (+7 more)'``: the first few offenders; ``total`` defaults to ``len(items)``."""
    total = len(items) if total is None else total
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    more = f", ... (+{total - MAX_LISTED} more)" if total > MAX_LISTED else ""
    return f"{shown}{more}"


def _header_problem(path: str) -> str | None:
    """Cheap check of one file (header only); returns a problem description or ``None``."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"{os.path.basename(path)} (unreadable: {type(exc).__name__})"
    if size != (PATCH_SIZE, PATCH_SIZE):
        return f"{os.path.basename(path)} ({size[0]}x{size[1]})"
    if mode not in ("RGB", "RGBA", "L", "P", "CMYK", "YCbCr"):
        return f"{os.path.basename(path)} (mode {mode})"
    return None


def decode_patch(path: str | Path) -> np.ndarray:
    """Decode one patch file to uint8 ``(96, 96, 3)`` RGB; any failure is a :class:`DatasetError`."""
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        arr = _decode_tiff_fallback(path, exc)
    if arr.shape != (PATCH_SIZE, PATCH_SIZE, 3):
        raise DatasetError(
            f"{path}: patch has shape {arr.shape}, expected ({PATCH_SIZE}, {PATCH_SIZE}, 3) RGB"
        )
    return arr


def _decode_tiff_fallback(path: str | Path, first_error: Exception) -> np.ndarray:
    """TIFF flavours PIL cannot decode are retried with tifffile."""
    if os.path.splitext(str(path))[1].lower() not in (".tif", ".tiff"):
        raise DatasetError(f"{path}: cannot decode image: {first_error}") from first_error
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(path))
    except Exception as exc:  # tifffile raises many types for corrupt data
        raise DatasetError(f"{path}: cannot decode image: {first_error}") from exc
    if arr.dtype != np.uint8:
        raise DatasetError(f"{path}: pixel type {arr.dtype}, expected uint8")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    return arr


class ImageFileDataset(PatchDataset):
    """Patches stored one per file, with labels known up front."""

    def __init__(self, root: Path, paths: list[str], labels: np.ndarray, ids: list[str], workers: int = 0):
        """``paths`` are plain strings (220k ``Path`` objects cost seconds to build)."""
        if len(paths) == 0:
            raise DatasetError(f"{root}: dataset holds no patches")
        self.root = Path(root)
        self.paths = paths
        self._labels = np.asarray(labels, dtype=np.int64)
        self._ids = ids
        self.workers = workers or default_workers()

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def ids(self) -> list[str]:
        return self._ids

    def read(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), PATCH_SIZE, PATCH_SIZE, 3), dtype=np.uint8)
        if len(idx) == 0:
            return out
        if idx.min() < -len(self) or idx.max() >= len(self):
            raise IndexError(f"index out of range for dataset of {len(self)} patches")

        def work(pos: int) -> None:
            out[pos] = decode_patch(self.paths[idx[pos]])

        if len(idx) < 16 or self.workers == 1:
            for pos in range(len(idx)):
                work(pos)
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                # list() re-raises the first worker exception (a DatasetError naming the file).
                list(pool.map(work, range(len(idx)), chunksize=max(1, len(idx) // (4 * self.workers))))
        return out

    def source_stats(self) -> list[tuple[str, int, int]]:
        out = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError as exc:
                raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
            out.append((path, st.st_size, st.st_mtime_ns))
        return out

    def check_headers(self, mode: str = "auto") -> int:
        """Check size/readability from file headers: ``"full"``, ``"sample"``, ``"none"`` or ``"auto"``.

        ``auto`` checks every file up to :data:`FULL_CHECK_LIMIT` files and a spread sample above.
        Returns the number of files checked; raises :class:`DatasetError` listing count + offenders.
        """
        if mode not in ("auto", "full", "sample", "none"):
            raise DatasetError(f"unknown check mode {mode!r} (use auto, full, sample or none)")
        if mode == "none":
            return 0
        n = len(self.paths)
        if mode == "full" or (mode == "auto" and n <= FULL_CHECK_LIMIT):
            chosen = np.arange(n)
        else:
            chosen = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_CHECK_COUNT)).astype(np.int64))
        with ThreadPoolExecutor(self.workers) as pool:
            problems = [p for p in pool.map(_header_problem, (self.paths[i] for i in chosen)) if p]
        if problems:
            raise DatasetError(
                f"{self.root}: {len(problems)} of {len(chosen)} checked patch files are unreadable or "
                f"not {PATCH_SIZE}x{PATCH_SIZE}: {format_offenders(problems)}"
            )
        return len(chosen)

    def describe(self) -> dict:
        info = super().describe()
        info["path"] = str(self.root)
        return info


def list_image_files(folder: Path) -> dict[str, str]:
    """Map file stem -> path for the image files directly inside ``folder``.

    Raises :class:`DatasetError` when two files share a stem (e.g. ``a.tif`` and ``a.jpg``).
    """
    found: dict[str, str] = {}
    clashes: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
                continue
            if stem in found:
                clashes.append(stem)
                continue
            found[stem] = entry.path
    if clashes:
        listed = format_offenders(sorted(clashes))
        raise DatasetError(f"{folder}: {len(clashes)} ids have several image files: {listed}")
    return found
