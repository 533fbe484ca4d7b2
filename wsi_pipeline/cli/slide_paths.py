"""The slides a ``wsi-infer`` command line names: files as given, folders by extension.

A folder gives its slide files (sorted); with ``recursive`` its subfolders' too. What a folder
holds besides is named in one note (subfolders not descended into, files that are not slides by
extension), so nothing is skipped without a word. Hidden entries (``.name``) and the data folder
of an MRXS slide (``slide/`` beside ``slide.mrxs``) are neither scanned nor reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wsi_pipeline.errors import OptionError

#: File extensions picked up in a folder (OpenSlide formats + generic/OME TIFF + DICOM).
SLIDE_EXTENSIONS = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
)
#: Slide formats whose data live in a folder of the same stem beside the file.
_DATA_FOLDER_FORMATS = (".mrxs", ".vms")
_SHOWN = 3  # names shown per kind in a note

Note = Callable[[str], object]


@dataclass
class FolderScan:
    """What one folder (and, recursively, its subfolders) holds."""

    slides: list[Path] = field(default_factory=list)
    skipped_folders: list[Path] = field(default_factory=list)
    other_files: list[Path] = field(default_factory=list)


def is_slide_name(path: Path) -> bool:
    return path.suffix.lower() in SLIDE_EXTENSIONS


def scan_folder(folder: Path, recursive: bool = False, scan: FolderScan | None = None) -> FolderScan:
    """The slide files under ``folder`` (sorted; subfolders too when ``recursive``) and what else."""
    scan = scan or FolderScan()
    entries = sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))
    data_folders = {p.with_suffix("").name for p in entries if p.suffix.lower() in _DATA_FOLDER_FORMATS}
    for entry in entries:
        if entry.is_dir():
            if entry.name in data_folders:
                continue
            if recursive:
                scan_folder(entry, True, scan)
            else:
                scan.skipped_folders.append(entry)
        elif is_slide_name(entry):
            scan.slides.append(entry)
        else:
            scan.other_files.append(entry)
    return scan


def _names(paths: list[Path], root: Path) -> str:
    shown = [str(p.relative_to(root)) for p in paths[:_SHOWN]]
    return ", ".join(shown) + (f", ... ({len(paths) - _SHOWN} more)" if len(paths) > _SHOWN else "")


def skipped_text(folder: Path, scan: FolderScan) -> str | None:
    """What ``folder`` held besides slides (``skipped ...``), None when nothing was skipped."""
    parts = []
    if scan.skipped_folders:
        n = len(scan.skipped_folders)
        parts.append(
            f"{n} subfolder{'s' * (n != 1)} ({_names(scan.skipped_folders, folder)}; --recursive descends)"
        )
    if scan.other_files:
        n = len(scan.other_files)
        parts.append(f"{n} file{'s' * (n != 1)} that {'are' if n != 1 else 'is'} not a slide by extension "
                     f"({_names(scan.other_files, folder)})")  # fmt: skip
    return "skipped " + " and ".join(parts) if parts else None


def expand_slide_paths(
    inputs: Iterable[Path], recursive: bool = False, note: Note | None = None
) -> list[Path]:
    """Files as given; folders replaced by their slide files (by extension, sorted; subfolders too
    when ``recursive``). ``note`` gets one line per folder that held anything else;
    :class:`OptionError` for a folder without slides."""
    slides: list[Path] = []
    for item in inputs:
        item = Path(item)
        if not item.is_dir():
            slides.append(item)
            continue
        scan = scan_folder(item, recursive)
        skipped = skipped_text(item, scan)
        if not scan.slides:
            extensions = ", ".join(SLIDE_EXTENSIONS)
            raise OptionError(
                f"{item}: folder holds no slide files ({extensions})" + (f"; {skipped}" if skipped else "")
            )
        if skipped and note is not None:
            note(f"note: {item}: {skipped}")
        slides.extend(scan.slides)
    return slides
