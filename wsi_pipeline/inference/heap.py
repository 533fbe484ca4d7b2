"""Give freed heap memory back to the system (glibc ``malloc_trim``), so a long slide run does not creep.

glibc keeps freed chunks in its per-thread arenas and raises its mmap threshold after large frees,
so the blocks (~7 MB), batches and activations the engine allocates over and over end up in
fragmented arenas that only grow: on a 24,000 px mosaic the engine's PSS crept from 406 to 674 MB
over 27,500 tiles. Trimming every few blocks keeps it flat (385-435 MB measured) at no measurable
cost. A no-op where glibc is not the C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: Blocks consumed between two trims.
TRIM_EVERY_BLOCKS = 8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> None:
    """``malloc_trim(0)``: return the free parts of every arena to the system (glibc; else nothing)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
