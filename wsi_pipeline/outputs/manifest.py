"""``manifest.json``: the completion record of a slide folder, written last.

It lists every file of the folder (``heatmap.zarr`` metadata and chunks, ``summary.json``, tables,
GeoJSON, ``overlay.png``, ``viewer.html`` and ``viewer_files/...``) with its size and BLAKE2b-256
digest. It is written after everything else inside the temporary folder, so its presence means the
folder was finished; :func:`check_manifest` (what resume asks before skipping a slide) reads every
listed file back and names the first that is missing, truncated, emptied or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from wsi_pipeline.result import SlideResult

NAME = "manifest.json"
ALGORITHM = "blake2b-256"
VERSION = 1
_BLOCK = 1 << 20


def file_digest(path: Path) -> str:
    """BLAKE2b-256 hex digest of the file's bytes."""
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` except the manifest, as sorted ``/``-separated relative paths."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in names:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != NAME:
                found.append(rel)
    return sorted(found)


def build_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder`` as it is now."""
    folder = Path(folder)
    files = {}
    for rel in _files(folder):
        path = folder / rel
        files[rel] = {"size": path.stat().st_size, "digest": file_digest(path)}
    return {
        "manifest_version": VERSION,
        "algorithm": ALGORITHM,
        "n_files": len(files),
        "total_bytes": sum(entry["size"] for entry in files.values()),
        "files": files,
    }


def write(folder: Path, result: SlideResult | None = None) -> None:
    """Write ``folder/manifest.json`` listing every other file in ``folder`` (call last)."""
    text = json.dumps(build_manifest(folder), indent=1, sort_keys=True) + "\n"
    (Path(folder) / NAME).write_text(text)


def read_manifest(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The ``files`` of ``folder``'s manifest; ``None`` when it is missing or malformed."""
    try:
        data = json.loads((Path(folder) / NAME).read_text())
        files = data["files"]
        ok = data["manifest_version"] == VERSION and data["algorithm"] == ALGORITHM
        ok = ok and isinstance(files, dict) and data["n_files"] == len(files)
        ok = ok and all(isinstance(e["size"], int) and isinstance(e["digest"], str) for e in files.values())
        ok = ok and not any(rel.startswith("/") or ".." in rel.split("/") for rel in files)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if ok else None


def check_manifest(folder: Path, checksums: bool = True) -> str | None:
    """Why ``folder`` is not complete as its manifest records it (first problem), ``None`` when
    every listed file is there with its size (and, with ``checksums``, its digest)."""
    folder = Path(folder)
    files = read_manifest(folder)
    if files is None:
        return f"{NAME} missing or unreadable"
    for rel, entry in files.items():
        path = folder / rel
        try:
            size = path.stat().st_size if path.is_file() else None
            if size is None:
                return f"{rel} missing"
            if size != entry["size"]:
                return f"{rel} is {size} bytes, the manifest says {entry['size']}"
            if checksums and file_digest(path) != entry["digest"]:
                return f"{rel} changed since it was written (checksum differs)"
        except OSError as exc:
            return f"{rel} unreadable: {exc.strerror or exc}"
    return None
