"""Ground-floor file helpers: atomic output folders and files, JSON-safe values, the umask.

``atomic_output_dir(out_root, name)`` yields a hidden ``out_root/.<name>.tmp-<owner>.XXXX`` folder
that is renamed to ``out_root/name`` only when the block succeeds, so an interrupted run never leaves a
folder that looks finished and an older complete result is replaced only at the very end. Slide
outputs, saved models and run summaries all go through these helpers. Temporary names record their
owner process (:mod:`wsi_pipeline.temp_owner`) so that a clean-up removes only those of dead runs.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

import numpy as np

from wsi_pipeline.errors import OptionError, OutputError
from wsi_pipeline.temp_owner import TEMP_MARKER, owner_tag

#: A value that ``json.dumps`` writes as is.
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
JsonDict = dict[str, JsonValue]

_NAME_MAX = 255  # bytes in one file name (ext4, xfs, NFS, ...)
_RANDOM = 8  # characters tempfile adds


#: Environment variable naming the user cache folder (patch caches, demo slide, precision decisions).
CACHE_ENV = "WSI_PIPELINE_CACHE"


def user_cache_dir() -> Path:
    """``$WSI_PIPELINE_CACHE`` or ``~/.cache/wsi_pipeline``: the one home of the user cache folder."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wsi_pipeline"


def slide_out_dir(out_root: Path, slide: Path) -> Path:
    """Where a slide's outputs go: ``OUT/<slide stem>``."""
    return Path(out_root) / Path(slide).stem


def check_distinct_slides(slides: Sequence[Path]) -> None:
    """Refuse, before any work, slides that would write the same ``OUT/<stem>`` folder (two slides
    with one stem) and one slide file given twice (same path, a symlink to it, a folder and a file in
    it): :class:`OptionError` naming both."""
    by_stem: dict[str, Path] = {}
    by_file: dict[object, Path] = {}
    for slide in map(Path, slides):
        key = _file_key(slide)
        if key in by_file:
            other = by_file[key]
            same = os.path.abspath(other) == os.path.abspath(slide)
            raise OptionError(f"{slide}: given twice" if same else f"{slide}: the same file as {other}")
        by_file[key] = slide
        other = by_stem.setdefault(slide.stem, slide)
        if other is not slide:
            raise OptionError(f"{slide}: same name as {other}; both would write to OUT/{slide.stem}")


def _file_key(path: Path) -> object:
    """What makes two paths one file: device + inode (links followed), else the absolute path."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return os.path.abspath(path)
    return (st.st_dev, st.st_ino)


def ensure_writable_dir(folder: Path) -> Path:
    """Create ``folder`` (and parents) and check a file can be made in it, before any slow work;
    :class:`OutputError` otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create output folder: {exc.strerror or exc}") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix("write-check"), dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write to output folder: {exc.strerror or exc}") from exc
    return folder


@contextmanager
def atomic_output_dir(out_root: Path, name: str) -> Iterator[Path]:
    """Yield a temporary folder in ``out_root``; on success it becomes ``out_root/name``.

    On any exception the temporary folder is removed and an existing ``out_root/name`` is
    left untouched.
    """
    out_root = Path(out_root)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(name), dir=out_root))
        tmp.chmod(0o777 & ~process_umask())  # mkdtemp makes 0700; results should look like any folder
    except OSError as exc:
        raise OutputError(f"{out_root}: cannot create output folder: {exc.strerror or exc}") from exc
    try:
        yield tmp
        _replace_dir(tmp, out_root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _temp_prefix(name: str, kind: str = "") -> str:
    """``.<name>.tmp[-old]-<pid>-<start>-<host>.``; mkdtemp/mkstemp add the random part. A long
    ``name`` is shortened so that the whole name stays within the usual 255-byte limit."""
    rest = f"{TEMP_MARKER}{kind}-{owner_tag()}."
    room = max(1, _NAME_MAX - len(rest.encode()) - 1 - _RANDOM)
    short = name.encode()[:room].decode(errors="ignore")
    return f".{short}{rest}"


def process_umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``; an old ``final`` is moved aside first, then deleted."""
    old: Path | None = None
    try:
        if final.is_symlink() or final.is_file():
            raise OutputError(f"{final}: exists and is not a folder; not replacing it")
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(final.name, "-old"), dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
    except OSError as exc:
        if old is not None and not final.exists():  # put the previous result back
            os.replace(old / final.name, final)
        raise OutputError(f"{final}: cannot move finished outputs into place: {exc.strerror or exc}") from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` via a temporary file in the same folder, then rename: readers never see half a
    file and an interrupted write leaves the old one. Errors become :class:`OutputError`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file path")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()
    return path


@overload
def json_safe(value: dict[Any, Any]) -> JsonDict: ...
@overload
def json_safe(value: object) -> JsonValue: ...
def json_safe(value: object) -> JsonValue:
    """Recursively turn numpy scalars/arrays, tuples, paths and non-finite floats into JSON values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"not a JSON value: {type(value).__name__}")
