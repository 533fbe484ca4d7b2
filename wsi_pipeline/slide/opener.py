"""Pick a back end for a slide file (the one ``open_slide`` entry point)."""

from __future__ import annotations

import errno
import os
import stat
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
    check_slide_file(path)
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


def check_slide_file(path: str | Path) -> os.stat_result:
    """The ``stat`` of the regular file ``path`` names (links followed), checked without opening it:
    a FIFO, socket or device (``/dev/zero``) would block or never end, so it is refused, as are a
    folder, a symlink loop, a broken link, a missing, unreadable or empty file
    (:class:`SlideOpenError`, one line naming the path as given)."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows links
    except OSError as exc:
        raise SlideOpenError(f"{path}: {_stat_problem(path, exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SlideOpenError(f"{path}: is a directory, not a slide file")
    if not stat.S_ISREG(st.st_mode):
        shown = f" ({_file_kind(st.st_mode)}" + (f" {path.resolve()}" if path.is_symlink() else "") + ")"
        raise SlideOpenError(f"{path}: not a regular file{shown}; give the slide file itself")
    try:
        with path.open("rb"):  # a regular file: opening cannot block
            pass
    except OSError as exc:
        raise SlideOpenError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    if st.st_size == 0:
        raise SlideOpenError(f"{path}: file is empty (0 bytes)")
    return st


def _stat_problem(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back at itself)"
    if exc.errno == errno.ENOENT:
        if path.is_symlink():
            return f"slide file not found (broken link to {os.readlink(path)})"
        return "slide file not found"
    return f"cannot read file: {exc.strerror or exc}"


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


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
