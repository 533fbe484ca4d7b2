"""Pick a back end for a slide file (the one ``open_slide`` entry point)."""

from __future__ import annotations

import struct
from pathlib import Path

import openslide
import tifffile

from wsi_pipeline.errors import SlideOpenError
from wsi_pipeline.slide.base import SlideReader
from wsi_pipeline.slide.openslide_reader import OpenSlideReader
from wsi_pipeline.slide.tifffile_reader import TiffFileReader

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def open_slide(path: str | Path) -> SlideReader:
    """Open a whole-slide image with the best available back end.

    OME-TIFF -> tifffile (sees SubIFD pyramids); anything OpenSlide opens -> OpenSlide;
    other TIFFs (e.g. big-endian JPEG OME crops OpenSlide refuses) -> tifffile.
    Raises :class:`SlideOpenError` with a one-line reason for missing, empty, truncated
    or unrecognised files.
    """
    path = Path(path)
    _check_file(path)
    is_tiff = _check_tiff_header(path)
    if is_tiff and _is_ome(path):
        try:
            return TiffFileReader(path)
        except SlideOpenError:
            pass  # fall through to OpenSlide
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        vendor = None
    openslide_error: SlideOpenError | None = None
    if vendor is not None:
        try:
            return OpenSlideReader(path)
        except SlideOpenError as exc:
            openslide_error = exc
    if is_tiff:
        try:
            return TiffFileReader(path)
        except SlideOpenError as exc:
            if openslide_error is not None:
                raise SlideOpenError(f"{openslide_error}; tifffile fallback failed too: {exc}") from exc
            raise
    if openslide_error is not None:
        if vendor == "dicom":
            raise SlideOpenError(f"{openslide_error} (no other back end reads DICOM)") from openslide_error
        raise openslide_error
    raise SlideOpenError(f"{path}: not a slide: format not recognised by OpenSlide or tifffile")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SlideOpenError(f"{path}: slide file not found")
    if path.is_dir():
        raise SlideOpenError(f"{path}: is a directory, not a slide file")
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        raise SlideOpenError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise SlideOpenError(f"{path}: file is empty (0 bytes)")


def _check_tiff_header(path: Path) -> bool:
    """True for a TIFF/BigTIFF; raises when the first directory lies beyond the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(16)
    if head[:4] not in _TIFF_MAGICS:
        return False
    order = "<" if head[:2] == b"II" else ">"
    if head[2:4] in (b"*\x00", b"\x00*"):
        if len(head) < 8:
            raise SlideOpenError(f"{path}: file is truncated (TIFF header incomplete)")
        first_ifd = struct.unpack(order + "I", head[4:8])[0]
    else:
        if len(head) < 16:
            raise SlideOpenError(f"{path}: file is truncated (BigTIFF header incomplete)")
        first_ifd = struct.unpack(order + "Q", head[8:16])[0]
    if first_ifd >= size:
        raise SlideOpenError(
            f"{path}: file is truncated (TIFF directory at byte {first_ifd} but the file has {size} bytes)"
        )
    _check_tiff_data_extent(path, size)
    return True


def _check_tiff_data_extent(path: Path, size: int) -> None:
    """Raise when any image data of the TIFF would lie beyond the end of the file."""
    try:
        with tifffile.TiffFile(str(path)) as tif:
            end = 0
            for page in tif.pages:
                for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                    end = max(end, int(offset) + int(count))
    except Exception:  # structure problems are reported by the readers themselves
        return
    if end > size:
        raise SlideOpenError(
            f"{path}: file is truncated (image data runs to byte {end} but the file has {size} bytes)"
        )


def _is_ome(path: Path) -> bool:
    try:
        with tifffile.TiffFile(str(path)) as tif:
            return bool(tif.is_ome)
    except Exception:
        return False
