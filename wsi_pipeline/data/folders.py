"""Class-folder layout: ``DIR/0/*.png`` (normal) and ``DIR/1/*.png`` (tumour)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsi_pipeline.data.images import IMAGE_EXTENSIONS, ImageFileDataset, format_offenders, list_image_files
from wsi_pipeline.errors import DatasetError

CLASS_DIRS = ("0", "1")


class ClassFolderDataset(ImageFileDataset):
    """Patches sorted into one folder per label; order is class 0 then class 1, by file name."""

    @classmethod
    def open(cls, root: Path | str) -> ClassFolderDataset:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        absent = [c for c in CLASS_DIRS if not (root / c).is_dir()]
        if absent:
            raise DatasetError(f"{root}: class folders {absent} missing (expected {root}/0/ and {root}/1/)")
        stray = sorted(
            e.name
            for e in os.scandir(root)
            if e.is_dir()
            and e.name not in CLASS_DIRS
            and not e.name.startswith(".")
            and _has_images(Path(e.path))
        )
        if stray:
            raise DatasetError(
                f"{root}: {len(stray)} image folders other than 0/ and 1/ (labels must be 0 or 1): "
                f"{format_offenders(stray)}"
            )
        paths: list[str] = []
        labels: list[int] = []
        ids: list[str] = []
        for label in CLASS_DIRS:
            files = list_image_files(root / label)
            for stem in sorted(files):
                paths.append(files[stem])
                labels.append(int(label))
                ids.append(f"{label}/{stem}")
        return cls(root, paths, np.asarray(labels, dtype=np.int64), ids)


def _has_images(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in entries)


def is_class_folder_layout(path: Path) -> bool:
    return any((path / c).is_dir() for c in CLASS_DIRS)
