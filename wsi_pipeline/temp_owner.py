"""Who owns a hidden temporary output entry, and whether that owner is provably gone.

Every temporary folder or file the atomic writers make (:mod:`wsi_pipeline.files`) is named
``.<name>.tmp-<pid>-<start>-<host>.<random>``: the process id, that process's start time (clock
ticks since boot, from ``/proc``; ``0`` where unknown) and the host name. A clean-up may delete an
entry only when :func:`owner_gone` says so: the owner ran on this host and its process no longer
exists (or the pid now belongs to a process started later). Entries of live processes and of
other hosts are left alone.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TEMP_MARKER", "TempOwner", "is_temp_name", "owner_gone", "owner_tag", "parse_owner"]

#: Name marker of in-progress entries (``.<name>.tmp-...``); clean-up relies on it.
TEMP_MARKER = ".tmp"
_OWNER = re.compile(r"\.tmp(?:-old)?-(\d+)-(\d+)-([A-Za-z0-9_-]*)\.[^.]*$")


def _host() -> str:
    """This host's name, reduced to characters safe in a file name (max 40)."""
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:40] or "host"


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot; ``None`` when it does not exist
    (or is a zombie). Where ``/proc`` is missing: ``0`` for a live pid."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        text = stat.read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return 0 if _pid_alive(pid) else None
    except OSError:
        return 0 if _pid_alive(pid) else None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
    if not fields or fields[0] in ("Z", "X"):  # zombie or dead: it writes nothing any more
        return None
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class TempOwner:
    """The process that made a temporary entry."""

    pid: int
    start: int
    host: str

    @classmethod
    def me(cls) -> TempOwner:
        pid = os.getpid()
        return cls(pid, process_start_ticks(pid) or 0, _host())

    def tag(self) -> str:
        return f"{self.pid}-{self.start}-{self.host}"


def owner_tag() -> str:
    """``<pid>-<start>-<host>`` of this process, for a temporary name (prefix + ``.`` + random)."""
    return TempOwner.me().tag()


def is_temp_name(name: str) -> bool:
    """True for the hidden temporary folders/files that outputs are built in before the rename."""
    return name.startswith(".") and TEMP_MARKER in name


def parse_owner(name: str) -> TempOwner | None:
    """The owner a temporary entry's name records; ``None`` for names without one (older versions)."""
    match = _OWNER.search(name)
    if match is None:
        return None
    return TempOwner(int(match[1]), int(match[2]), match[3])


def owner_gone(name: str) -> bool:
    """True when the process that made temp entry ``name`` provably no longer runs.

    Names without an owner (written by versions before owners were recorded) count as gone: call
    only while holding the output folder's lock (:mod:`wsi_pipeline.outdir`).
    """
    owner = parse_owner(name)
    if owner is None:
        return True
    if owner.host != _host():
        return False  # another machine's process: cannot tell
    start = process_start_ticks(owner.pid)
    if start is None:
        return True
    return owner.start != 0 and start != 0 and start != owner.start  # pid reused by a later process
