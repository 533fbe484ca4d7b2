"""Faster large-block reads for TIFF-based slides that OpenSlide opened.

For a tiled TIFF (generic pyramidal TIFF, SVS), OpenSlide decodes each JPEG tile into ARGB, composites
it with cairo, and openslide-python converts the result to RGBA again; reading a 1,536 px block this
way costs ~5x more CPU than decoding the same tiles straight to RGB with tifffile/imagecodecs. On a
2-core machine that CPU is taken from the model, so the inference engine reads blocks through
:class:`FastBlockReader`: levels where tifffile sees the same image (same size, integer downsample)
*and* returns bit-identical pixels for a probe region are read with tifffile; everything else (other
levels, formats, any mismatch or tifffile error at open) stays with OpenSlide.
"""

from __future__ import annotations

import numpy as np

from wsi_pipeline.errors import SlideOpenError
from wsi_pipeline.slide.base import SlideReader
from wsi_pipeline.slide.openslide_reader import OpenSlideReader
from wsi_pipeline.slide.tifffile_reader import TiffFileReader

PROBE_PX = 512


class FastBlockReader(SlideReader):
    """Delegates to ``primary``; reads the verified ``fast_levels`` with a tifffile reader."""

    def __init__(self, primary: SlideReader, fast: TiffFileReader, fast_levels: set[int]) -> None:
        self.primary = primary
        self.fast = fast
        self.fast_levels = frozenset(fast_levels)
        self.path = primary.path

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.primary.dimensions

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return self.primary.level_dimensions

    @property
    def level_downsamples(self) -> list[float]:
        return self.primary.level_downsamples

    @property
    def metadata_mpp(self) -> float | None:
        return self.primary.metadata_mpp

    @property
    def format_name(self) -> str:
        return self.primary.format_name

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        reader = self.fast if level in self.fast_levels else self.primary
        return reader.read_region(location, level, size)

    def close(self) -> None:
        """Closes the tifffile handle only; ``primary`` belongs to the caller."""
        self.fast.close()


def fast_block_reader(reader: SlideReader, levels: set[int] | None = None) -> SlideReader:
    """``reader`` wrapped with tifffile reads where they are verified identical, else ``reader``.

    Only ``levels`` (default: all) are probed, so a caller that reads one level pays for one probe."""
    if not isinstance(reader, OpenSlideReader) or reader.path.suffix.lower() not in {".tif", ".tiff", ".svs"}:
        return reader
    try:
        fast = TiffFileReader(reader.path)
    except SlideOpenError:
        return reader
    try:
        verified = _identical_levels(reader, fast, levels)
    except Exception:  # any read problem: keep OpenSlide, which reports errors its own way
        verified = set()
    if not verified:
        fast.close()
        return reader
    return FastBlockReader(reader, fast, verified)


def _identical_levels(primary: SlideReader, fast: TiffFileReader, wanted: set[int] | None) -> set[int]:
    levels = set()
    fast_dims = fast.level_dimensions
    for level, (dims, ds) in enumerate(zip(primary.level_dimensions, primary.level_downsamples, strict=True)):
        if level >= len(fast_dims) or tuple(fast_dims[level]) != tuple(dims):
            break
        if wanted is not None and level not in wanted:
            continue
        if abs(ds - round(ds)) > 1e-9 or abs(fast.level_downsamples[level] - ds) > 1e-9:
            continue
        width, height = dims
        w, h = min(PROBE_PX, width), min(PROBE_PX, height)
        # Probe the centre and an odd, tile-straddling offset near the far corner.
        for x, y in (
            ((width - w) // 2, (height - h) // 2),
            (max(0, width - w - 37), max(0, height - h - 53)),
        ):
            location = (int(round(x * ds)), int(round(y * ds)))
            if not np.array_equal(
                primary.read_region(location, level, (w, h)), fast.read_region(location, level, (w, h))
            ):
                break
        else:
            levels.add(level)
    return levels
