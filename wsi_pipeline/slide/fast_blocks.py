"""Faster large-block reads for TIFF-based slides: batched JPEG tile decoding, then tifffile.

For a tiled TIFF (generic pyramidal TIFF, SVS), OpenSlide decodes each JPEG tile into ARGB, composites
it with cairo, and openslide-python converts the result to RGBA again; reading a 1,536 px block this
way costs several times the CPU of decoding the same tiles straight to RGB. On a 2-core machine that
CPU is taken from the model, so the inference engine reads blocks through :class:`FastBlockReader`,
which serves each level from the fastest source verified at open to return the primary reader's
pixels (within the decoder's tolerance: 0, bit-identical, for libjpeg-turbo on the CPU):

1. JPEG levels: :class:`~wsi_pipeline.slide.jpeg_blocks.JpegBlockReader` (raw tile bytes decoded in
   batches, see :mod:`~wsi_pipeline.slide.jpeg_tiles`); for OpenSlide *and* tifffile primaries
   (OME-TIFF, SubIFD pyramids, big-endian files OpenSlide refuses);
2. other levels OpenSlide opened: tifffile's own tile decoding (:class:`TiffFileReader`);
3. everything else (other formats and levels, any mismatch or error at open): the primary reader.

OpenSlide levels qualify only with an integer downsample that tifffile agrees on (elsewhere
OpenSlide blends neighbouring pixels for fractional level coordinates).
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager

import numpy as np

from wsi_pipeline.errors import SlideOpenError
from wsi_pipeline.slide.base import SlideReader
from wsi_pipeline.slide.jpeg_blocks import JpegBlockReader, jpeg_block_reader
from wsi_pipeline.slide.jpeg_tiles import CpuJpegDecoder, TileDecoder
from wsi_pipeline.slide.openslide_reader import OpenSlideReader
from wsi_pipeline.slide.tifffile_reader import TiffFileReader

PROBE_PX = 512
_TIFF_SUFFIXES = {".tif", ".tiff", ".svs"}


class FastBlockReader(SlideReader):
    """Delegates to ``primary``; reads ``jpeg.levels`` with ``jpeg`` and ``tiff_levels`` with ``tiff``.

    ``fast_levels`` are all levels not read by ``primary``; ``jpeg_levels`` those read by ``jpeg``.
    """

    def __init__(
        self,
        primary: SlideReader,
        tiff: TiffFileReader | None,
        tiff_levels: set[int],
        jpeg: JpegBlockReader | None = None,
    ) -> None:
        self.primary = primary
        self.fast = tiff
        self.jpeg = jpeg
        self.jpeg_levels = jpeg.levels if jpeg is not None else frozenset()
        self.tiff_levels = frozenset(tiff_levels) - self.jpeg_levels if tiff is not None else frozenset()
        self.fast_levels = self.jpeg_levels | self.tiff_levels
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
        if level in self.jpeg_levels:
            return self.jpeg.read_region(location, level, size)  # type: ignore[union-attr]
        if level in self.tiff_levels:
            return self.fast.read_region(location, level, size)  # type: ignore[union-attr]
        return self.primary.read_region(location, level, size)

    def close(self) -> None:
        """Closes the readers this one opened; ``primary`` belongs to the caller."""
        if self.jpeg is not None:
            self.jpeg.close()
        if self.fast is not None and self.fast is not self.primary:
            self.fast.close()


def fast_block_reader(
    reader: SlideReader, levels: set[int] | None = None, decoder: TileDecoder | None = None
) -> SlideReader:
    """``reader`` wrapped with the fast reads verified to match it, else ``reader`` itself.

    Only ``levels`` (default: all) are probed, so a caller that reads one level pays for one probe.
    ``decoder`` decodes JPEG tiles (default: libjpeg-turbo on up to 8 CPU threads; for a device,
    ``jpeg_gpu.tile_decoder(device)``); it is closed with the returned reader, or here when unused.
    Close the returned reader when it is not ``reader``; that leaves ``reader`` open."""
    decoder = decoder if decoder is not None else CpuJpegDecoder()
    tiff = _tiff_of(reader)
    if tiff is None:
        decoder.close()
        return reader
    same = set(range(reader.level_count)) if tiff is reader else _same_levels(reader, tiff)
    wanted = same if levels is None else same & set(levels)
    try:
        jpeg = jpeg_block_reader(tiff, wanted, decoder)
    except OSError:  # cannot open the file a second time: no JPEG path (the decoder is closed)
        jpeg = None
    if jpeg is not None:
        jpeg.retain(_verified(reader, jpeg, jpeg.levels, jpeg.decoder.tolerance))
        if not jpeg.levels:
            jpeg.close()
            jpeg = None
    jpeg_levels = jpeg.levels if jpeg is not None else frozenset()
    tiff_levels = set() if tiff is reader else _verified(reader, tiff, wanted - jpeg_levels, 0)
    if tiff is not reader and not tiff_levels:
        tiff.close()  # the JPEG reader has its own file descriptor
    if jpeg is None and not tiff_levels:
        return reader
    return FastBlockReader(reader, tiff if tiff_levels else None, tiff_levels, jpeg)


@contextmanager
def fast_reads(reader: SlideReader, levels: set[int] | None = None) -> Iterator[SlideReader]:
    """:func:`fast_block_reader` for a ``with`` block, closed at its end (``reader`` stays open)."""
    source = fast_block_reader(reader, levels)
    try:
        yield source
    finally:
        if source is not reader:
            source.close()


def _tiff_of(reader: SlideReader) -> TiffFileReader | None:
    """The tifffile view of ``reader``'s file: itself, a new reader for TIFF files OpenSlide opened,
    or None."""
    if isinstance(reader, TiffFileReader):
        return reader
    if not isinstance(reader, OpenSlideReader) or reader.path.suffix.lower() not in _TIFF_SUFFIXES:
        return None
    try:
        return TiffFileReader(reader.path)
    except SlideOpenError:
        return None


def _same_levels(primary: SlideReader, tiff: TiffFileReader) -> set[int]:
    """Leading levels with the same size and the same integer downsample in both readers."""
    same = set()
    tiff_dims, tiff_ds = tiff.level_dimensions, tiff.level_downsamples
    for level, (dims, ds) in enumerate(zip(primary.level_dimensions, primary.level_downsamples, strict=True)):
        if level >= len(tiff_dims) or tuple(tiff_dims[level]) != tuple(dims):
            break
        if abs(ds - round(ds)) <= 1e-9 and abs(tiff_ds[level] - ds) <= 1e-9:
            same.add(level)
    return same


def _verified(
    primary: SlideReader, fast: SlideReader | JpegBlockReader, levels: AbstractSet[int], tolerance: int
) -> set[int]:
    """Levels where ``fast`` returns ``primary``'s pixels (max difference <= ``tolerance``) for probe
    regions at the centre, near the far corner at an odd, tile-straddling offset, and over the
    bottom-right edge. Any read error drops the level (the primary reports errors its own way)."""
    ok = set()
    for level in sorted(levels):
        width, height = primary.level_dimensions[level]
        ds = primary.level_downsamples[level]
        w, h = min(PROBE_PX, width), min(PROBE_PX, height)
        probes = (
            ((width - w) // 2, (height - h) // 2),
            (max(0, width - w - 37), max(0, height - h - 53)),
            (width - w // 2, height - h // 2),
        )
        try:
            for x, y in probes:
                location = (int(round(x * ds)), int(round(y * ds)))
                a = primary.read_region(location, level, (w, h))
                b = fast.read_region(location, level, (w, h))
                if a.shape != b.shape or np.abs(a.astype(np.int16) - b).max() > tolerance:
                    break
            else:
                ok.add(level)
        except Exception:  # noqa: BLE001 - any read problem: keep the primary reader for this level
            continue
    return ok
