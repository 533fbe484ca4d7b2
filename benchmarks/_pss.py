"""PSS (proportional set size: shared pages split between the processes using them) from /proc,
for one process or summed over a process tree: the memory figure the benchmarks compare."""

from __future__ import annotations

import os


def pss_bytes(pid: int) -> int:
    """PSS of one process, 0 if it is gone (or /proc has no smaps_rollup)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_pss_mb(pid: int) -> float:
    """PSS summed over ``pid`` and all its descendants (MB)."""
    kids, todo, total = _children(), [pid], 0
    while todo:
        p = todo.pop()
        total += pss_bytes(p)
        todo += kids.get(p, [])
    return total / 2**20
