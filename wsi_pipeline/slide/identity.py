"""Which slide file a result was made from (:class:`SlideFile`): the resume key's half that names the input.

``summary.json`` records it (``slide_file``); a batch run skips a slide only when the file it is given
now has the same resolved path, size, modification time and content digest. The digest is a
BLAKE2b-256 of the whole file when it is small (<= 8 MiB), else of its size, its first and last MiB
and 16 evenly spaced 64 KiB chunks (about 3 MiB read, whatever the slide's size), so a replaced
slide is told apart even when a copy kept the old modification time. An MRXS slide's data folder
(``slide/`` beside ``slide.mrxs``) adds the names, sizes and modification times of its files.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_pipeline.errors import SlideOpenError

__all__ = ["SlideFile", "slide_file_identity"]

WHOLE = "blake2b-256"
SAMPLED = "blake2b-256-sampled-v1"
_MIB = 1 << 20
_WHOLE_MAX = 8 * _MIB
_EDGE = _MIB
_CHUNK = 64 * 1024
_N_CHUNKS = 16
_DATA_FOLDER_SUFFIXES = (".mrxs",)


@dataclass(frozen=True)
class SlideFile:
    """A slide file's identity: resolved path, size in bytes, ``st_mtime_ns`` and content digest."""

    path: str
    size: int
    mtime_ns: int
    digest: str
    digest_method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "digest": self.digest,
            "digest_method": self.digest_method,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideFile:
        value = cls(**data)
        ok = (
            isinstance(value.path, str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in (value.size, value.mtime_ns))
            and isinstance(value.digest, str)
            and value.digest_method in (WHOLE, SAMPLED)
        )
        if not ok:
            raise ValueError(f"not a slide file identity: {data!r}")
        return value


def _read_at(fh: Any, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return bytes(fh.read(length))


def _sampled(fh: Any, size: int, digest: Any) -> None:
    digest.update(_read_at(fh, 0, _EDGE))
    span = size - 2 * _EDGE - _CHUNK
    for i in range(_N_CHUNKS):
        digest.update(_read_at(fh, _EDGE + span * i // max(_N_CHUNKS - 1, 1), _CHUNK))
    digest.update(_read_at(fh, size - _EDGE, _EDGE))


def _data_folder(path: Path, digest: Any) -> None:
    folder = path.with_suffix("")
    if path.suffix.lower() not in _DATA_FOLDER_SUFFIXES or not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        st = entry.stat()
        digest.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())


def slide_file_identity(path: str | Path) -> SlideFile:
    """The :class:`SlideFile` of ``path`` (links followed). Only a regular file is read (a FIFO or
    a device would block or never end): anything else, or a file that cannot be read, is a
    :class:`SlideOpenError`."""
    path = Path(path)
    try:
        resolved = path.resolve(strict=True)
        st = os.stat(resolved)
        if not stat.S_ISREG(st.st_mode):
            raise SlideOpenError(f"{path}: not a regular file")
        digest = hashlib.blake2b(digest_size=32)
        digest.update(f"{st.st_size}\n".encode())
        with open(resolved, "rb") as fh:
            if st.st_size <= _WHOLE_MAX:
                method = WHOLE
                for block in iter(lambda: fh.read(_MIB), b""):
                    digest.update(block)
            else:
                method = SAMPLED
                _sampled(fh, st.st_size, digest)
        _data_folder(resolved, digest)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        raise SlideOpenError(
            f"{path}: cannot read the slide file: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    return SlideFile(str(resolved), int(st.st_size), int(st.st_mtime_ns), digest.hexdigest(), method)
