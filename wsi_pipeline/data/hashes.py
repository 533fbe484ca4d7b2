"""Content hashes of patches: which evaluated patches a model was trained on, whatever the file
layout they are stored in (a Kaggle JPEG and the same pixels in a PCam HDF5 file hash alike)."""

from __future__ import annotations

import hashlib

import numpy as np


def patch_hashes(images: np.ndarray, rows: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """uint64 BLAKE2b-64 digest of the uint8 pixels of each patch ``images[rows]`` (all by default)."""
    rows = np.arange(len(images), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), chunk):
        part = np.sort(rows[start : start + chunk])
        order = np.argsort(np.argsort(rows[start : start + chunk]))
        block = np.ascontiguousarray(images[part])
        digests = [hashlib.blake2b(patch.tobytes(), digest_size=8).digest() for patch in block]
        out[start : start + len(part)] = np.frombuffer(b"".join(digests), dtype="<u8")[order]
    return out


def count_known(hashes: np.ndarray, known: np.ndarray) -> int:
    """How many of ``hashes`` appear in ``known``."""
    return int(np.isin(np.asarray(hashes, dtype=np.uint64), np.asarray(known, dtype=np.uint64)).sum())
