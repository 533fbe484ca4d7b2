"""The Kaggle "Histopathologic Cancer Detection" layout: ``DIR/train/<id>.tif`` + ``DIR/train_labels.csv``."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from wsi_pipeline.data.images import ImageFileDataset, format_offenders, list_image_files
from wsi_pipeline.errors import DatasetError

LABELS_CSV = "train_labels.csv"
IMAGES_DIR = "train"


def read_labels_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Parse an ``id,label`` CSV; labels must be 0/1 and ids unique."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read labels CSV: {exc}") from exc
    if header is None:
        raise DatasetError(f"{path}: labels CSV is empty (expected a header 'id,label')")
    columns = [c.strip().lower() for c in header]
    if "id" not in columns or "label" not in columns:
        raise DatasetError(f"{path}: labels CSV header must have columns 'id' and 'label', got {header}")
    id_col, label_col = columns.index("id"), columns.index("label")
    ids: list[str] = []
    labels: list[int] = []
    bad: list[str] = []
    short: list[int] = []
    for line_no, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(id_col, label_col):
            short.append(line_no)
            continue
        ident, raw = row[id_col].strip(), row[label_col].strip()
        if raw not in ("0", "1"):
            bad.append(f"{ident}={raw!r} (line {line_no})")
            continue
        ids.append(ident)
        labels.append(int(raw))
    if short:
        lines = format_offenders([str(s) for s in short])
        raise DatasetError(f"{path}: {len(short)} rows with missing columns, lines {lines}")
    if bad:
        raise DatasetError(f"{path}: labels must be 0 or 1; {len(bad)} bad rows: {format_offenders(bad)}")
    if not ids:
        raise DatasetError(f"{path}: labels CSV has no rows")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise DatasetError(f"{path}: {len(dups)} duplicate ids in labels CSV: {format_offenders(dups)}")
    return ids, np.asarray(labels, dtype=np.int64)


class KaggleDataset(ImageFileDataset):
    """Kaggle layout; patch order follows the CSV."""

    @classmethod
    def open(
        cls, root: Path | str, images_dir: Path | str | None = None, labels_csv: Path | str | None = None
    ) -> KaggleDataset:
        root = Path(root)
        images = Path(images_dir) if images_dir is not None else root / IMAGES_DIR
        csv_path = Path(labels_csv) if labels_csv is not None else root / LABELS_CSV
        if not csv_path.is_file():
            raise DatasetError(f"{csv_path}: labels CSV not found (Kaggle layout needs {LABELS_CSV})")
        if not images.is_dir():
            raise DatasetError(f"{images}: image folder not found (Kaggle layout needs {IMAGES_DIR}/)")
        ids, labels = read_labels_csv(csv_path)
        files = list_image_files(images)
        missing = [i for i in ids if i not in files]
        if missing:
            raise DatasetError(
                f"{images}: {len(missing)} ids in {csv_path.name} have no image file: "
                f"{format_offenders(missing)}"
            )
        id_set = set(ids)
        unlabelled = sorted(stem for stem in files if stem not in id_set)
        if unlabelled:
            raise DatasetError(
                f"{images}: {len(unlabelled)} image files have no label in {csv_path.name}: "
                f"{format_offenders(unlabelled)}"
            )
        return cls(root, [files[i] for i in ids], labels, ids)


def is_kaggle_layout(path: Path) -> bool:
    return (path / LABELS_CSV).is_file() and (path / IMAGES_DIR).is_dir()
