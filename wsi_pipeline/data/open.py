"""``open_patch_dataset``: detect the layout of a patch dataset path and open it."""

from __future__ import annotations

from pathlib import Path

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.data.folders import ClassFolderDataset, is_class_folder_layout
from wsi_pipeline.data.images import ImageFileDataset
from wsi_pipeline.data.kaggle import IMAGES_DIR, LABELS_CSV, KaggleDataset, is_kaggle_layout
from wsi_pipeline.data.pcam_h5 import is_pcam_path, open_pcam
from wsi_pipeline.errors import DatasetError

LAYOUTS = ("kaggle", "pcam", "folders")


def detect_layout(path: Path | str) -> str:
    """``"kaggle"``, ``"pcam"`` or ``"folders"``; :class:`DatasetError` when none fits."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset path not found")
    if is_pcam_path(path):
        return "pcam"
    if path.is_file():
        if path.suffix.lower() == ".csv" and (path.parent / IMAGES_DIR).is_dir():
            return "kaggle"
        raise DatasetError(f"{path}: not a dataset (give a folder, a labels CSV or a PCam ..._x.h5 file)")
    if is_kaggle_layout(path):
        return "kaggle"
    if is_class_folder_layout(path):
        return "folders"
    if (path / LABELS_CSV).is_file() or (path / IMAGES_DIR).is_dir():
        missing = LABELS_CSV if not (path / LABELS_CSV).is_file() else f"{IMAGES_DIR}/"
        raise DatasetError(f"{path}: Kaggle layout is incomplete: {missing} is missing")
    raise DatasetError(
        f"{path}: unrecognised dataset layout; expected {IMAGES_DIR}/ + {LABELS_CSV} (Kaggle), "
        "camelyonpatch_level_2_split_<split>_{x,y}.h5 (PCam) or class folders 0/ and 1/"
    )


def open_patch_dataset(
    path: Path | str, split: str | None = None, layout: str | None = None, check: str = "auto"
) -> PatchDataset:
    """Open a labelled patch dataset, detecting its layout.

    - Kaggle: ``DIR/train/<id>.{tif,jpg,png}`` + ``DIR/train_labels.csv`` (or the CSV path itself).
    - PCam HDF5: a folder of ``camelyonpatch_level_2_split_<split>_{x,y}.h5`` (``split`` picks one when
      several are present) or the path of one ``_x.h5`` file.
    - Class folders: ``DIR/0/*`` and ``DIR/1/*``.

    ``check`` controls header checks of image files (``auto``: all up to 20k files, else a sample;
    ``full``, ``sample``, ``none``). Pixels are only decoded by ``read``.
    """
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if split is not None and layout != "pcam":
        raise DatasetError(f"{path}: split={split!r} applies only to PCam HDF5 folders")
    if layout == "pcam":
        return open_pcam(path, split)
    dataset: ImageFileDataset
    if layout == "kaggle":
        if path.is_file():
            dataset = KaggleDataset.open(path.parent, labels_csv=path)
        else:
            dataset = KaggleDataset.open(path)
    else:
        dataset = ClassFolderDataset.open(path)
    dataset.check_headers(check)
    return dataset
