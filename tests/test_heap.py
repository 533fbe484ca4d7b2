"""Freed heap memory goes back to the system (the engine trims every few blocks so PSS stays flat)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from wsi_pipeline.inference.heap import _libc, release_free_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def test_trim_returns_what_threads_freed() -> None:
    """Reader threads leave freed blocks between live ones in their arenas: glibc cannot shrink such a
    heap by itself (the live blocks pin it), only ``malloc_trim`` hands the free pages back."""
    if _libc() is None:
        pytest.skip("not glibc")
    release_free_memory()
    live: list[list[np.ndarray]] = []

    def churn() -> None:  # what reader threads do: many mid-size blocks, most freed, some kept
        blocks = [np.ones(100_000, dtype=np.uint8) for _ in range(80)]  # < 128 KB: heap, not mmap
        live.append(blocks[1::2])  # every other block stays alive past the trim ...
        del blocks  # ... so the freed ones are holes between live blocks, not a shrinkable top

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    before = _rss_mb()
    release_free_memory()
    after = _rss_mb()
    assert after < before  # pages handed back (~15 MB of holes); a no-op trim would fail here
    assert sum(len(blocks) for blocks in live) == 160  # the live blocks were kept until now
