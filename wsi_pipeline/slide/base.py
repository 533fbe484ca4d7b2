"""The slide-reader contract shared by the OpenSlide and tifffile back ends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def best_level(level_downsamples: Sequence[float], downsample: float) -> int:
    """Deepest level whose downsample is <= ``downsample`` (never upsample from a coarser level)."""
    best = 0
    for index, ds in enumerate(level_downsamples):
        if ds <= downsample * (1 + 1e-3):
            best = index
    return best


class SlideReader(ABC):
    """A read-only pyramidal slide. Coordinates are (x, y) in level-0 pixels.

    Implementations raise :class:`~wsi_pipeline.errors.SlideReadError` when pixel data
    cannot be decoded and never load a whole large level into memory.
    """

    path: Path

    @property
    @abstractmethod
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""

    @property
    @abstractmethod
    def level_dimensions(self) -> list[tuple[int, int]]:
        """(width, height) of every level, level 0 first."""

    @property
    @abstractmethod
    def level_downsamples(self) -> list[float]:
        """Downsample factor of every level relative to level 0."""

    @property
    @abstractmethod
    def metadata_mpp(self) -> float | None:
        """Microns per pixel at level 0 from the file's metadata, or None when unknown."""

    @abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array ``(h, w, 3)`` of ``size=(w, h)`` pixels of ``level`` whose top-left
        corner is ``location`` in level-0 pixels. Areas outside the slide are white."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """``(x, y, width, height)`` in level-0 px of the non-empty region the format declares
        (OpenSlide's ``openslide.bounds-*``, e.g. MIRAX or Leica), or None when there is none."""
        return None

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def format_name(self) -> str:
        return type(self).__name__

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample is <= ``downsample`` (never upsample from a coarser level)."""
        return best_level(self.level_downsamples, downsample)

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
