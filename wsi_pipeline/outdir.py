"""One run per output folder: the ``OUT/.wsi-pipeline.lock`` lock and the clean-up of dead runs' temp entries.

:func:`output_folder_lock` holds an exclusive ``fcntl.flock`` on ``OUT/.wsi-pipeline.lock`` for the
whole run (``wsi-infer``, single slide or batch), after checking that ``OUT`` can be created and
written. A second run on the same folder refuses at once with one line naming the holder (pid, host,
start), or waits for it with ``wait=True`` (``--wait``). The lock is released when the process ends,
however it ends, so a killed run never leaves a folder locked; the lock file itself stays.
:func:`clean_stale_temp` removes the hidden temporary entries whose owner process is provably gone
(see :mod:`wsi_pipeline.temp_owner`), never a live run's.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_pipeline.errors import OutputError
from wsi_pipeline.files import ensure_writable_dir
from wsi_pipeline.temp_owner import is_temp_name, owner_gone

__all__ = ["LOCK_NAME", "clean_stale_temp", "output_folder_lock"]

#: The lock file in every output folder a run writes.
LOCK_NAME = ".wsi-pipeline.lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
log = logging.getLogger(__name__)


def _holder_text(fd: int) -> str:
    """Who holds the lock, as its holder wrote it into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started_utc']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500] if sys.argv else "",
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


@contextmanager
def output_folder_lock(
    out_root: str | Path, wait: bool = False, echo: Callable[[str], object] | None = None
) -> Iterator[Path]:
    """Create ``out_root`` if needed and hold its lock for the block.

    Raises :class:`OutputError` when the folder cannot be created or written, or (unless ``wait``)
    when another run holds it. On a file system without locks a warning is logged and the run goes on.
    """
    out_root = ensure_writable_dir(Path(out_root))
    path = out_root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise OutputError(f"{path}: cannot open the output folder's lock: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            if not wait:
                raise OutputError(
                    f"{out_root}: output folder in use by another run ({holder}); "
                    "let it finish, or add --wait to wait for it"
                ) from None
            if echo is not None:
                echo(f"Waiting for the other run on {out_root} to finish ({holder}) ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise OutputError(f"{path}: cannot lock the output folder: {exc.strerror or exc}") from exc
            log.warning("%s: file system has no locks; make sure no other run writes here", out_root)
        _write_holder(fd)
        yield out_root
    finally:
        os.close(fd)  # releases the lock


def clean_stale_temp(out_root: str | Path) -> list[Path]:
    """Remove the temporary output folders/files in ``out_root`` whose owner process is provably
    gone (killed runs and workers on this host); a live run's, or another host's, are kept.

    Call while holding :func:`output_folder_lock` (temp names without an owner count as gone).
    """
    out_root = Path(out_root)
    removed: list[Path] = []
    if not out_root.is_dir():
        return removed
    for entry in sorted(out_root.iterdir()):
        if not is_temp_name(entry.name) or not owner_gone(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
