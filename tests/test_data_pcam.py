"""PCam HDF5 layout: lazy reads, split selection, pickling and bad files."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from wsi_pipeline.data import PCamH5Dataset, detect_layout, open_patch_dataset
from wsi_pipeline.errors import DatasetError

PREFIX = "camelyonpatch_level_2_split"


def write_split(root: Path, split: str, n: int, seed: int = 0, y: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, n).astype(np.uint8) if y is None else y
    with h5py.File(root / f"{PREFIX}_{split}_x.h5", "w") as fh:
        fh.create_dataset("x", data=x, chunks=(4, 96, 96, 3))
    with h5py.File(root / f"{PREFIX}_{split}_y.h5", "w") as fh:
        fh.create_dataset("y", data=labels.reshape(-1, 1, 1, 1))
    return x


def test_reads_any_index_order(tmp_path: Path) -> None:
    x = write_split(tmp_path, "valid", 50)
    ds = open_patch_dataset(tmp_path)  # single split: chosen automatically
    assert isinstance(ds, PCamH5Dataset) and len(ds) == 50
    assert detect_layout(tmp_path) == "pcam"
    for idx in ([3, 1, 1, 49, 0], [0, 40], list(range(10, 30)), [-1]):
        np.testing.assert_array_equal(ds.read(np.array(idx)), x[idx])
    assert ds.read(np.array([], dtype=np.int64)).shape == (0, 96, 96, 3)
    assert ds.ids[:2] == ["h5:0", "h5:1"]
    with pytest.raises(IndexError):
        ds.read(np.array([50]))


def test_split_choice_and_x_path(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 12, seed=1)
    xv = write_split(tmp_path, "valid", 8, seed=2)
    with pytest.raises(DatasetError, match="holds PCam splits train, valid; choose one"):
        open_patch_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no PCam 'test' split here"):
        open_patch_dataset(tmp_path, split="test")
    with pytest.raises(DatasetError, match="unknown PCam split 'dev'"):
        open_patch_dataset(tmp_path, split="dev")
    assert len(open_patch_dataset(tmp_path, split="train")) == 12
    ds = open_patch_dataset(tmp_path / f"{PREFIX}_valid_x.h5")
    np.testing.assert_array_equal(ds.read(np.arange(8)), xv)
    with pytest.raises(DatasetError, match="is the 'valid' split but split='train'"):
        open_patch_dataset(tmp_path / f"{PREFIX}_valid_x.h5", split="train")


def test_pickle_reopens_lazily(tmp_path: Path) -> None:
    x = write_split(tmp_path, "test", 6)
    ds = open_patch_dataset(tmp_path)
    ds.read(np.array([0]))  # opens the handle
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.read(np.array([5, 2])), x[[5, 2]])
    ds.close()


def test_gzipped_files_are_refused(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 4)
    for kind in ("x", "y"):
        src = tmp_path / f"{PREFIX}_valid_{kind}.h5"
        with open(src, "rb") as fin, gzip.open(str(src) + ".gz", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        src.unlink()
    with pytest.raises(DatasetError, match="gzipped .*gunzip"):
        open_patch_dataset(tmp_path)
    with pytest.raises(DatasetError, match="gunzip it first"):
        open_patch_dataset(tmp_path / f"{PREFIX}_valid_x.h5.gz")
    # gzip bytes under a plain .h5 name
    (tmp_path / f"{PREFIX}_valid_x.h5.gz").rename(tmp_path / f"{PREFIX}_valid_x.h5")
    (tmp_path / f"{PREFIX}_valid_y.h5.gz").rename(tmp_path / f"{PREFIX}_valid_y.h5")
    with pytest.raises(DatasetError, match="file is gzip-compressed; gunzip it first"):
        open_patch_dataset(tmp_path)


def test_bad_shapes_labels_and_missing_y(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 5, y=np.array([0, 1, 3, 1, 7], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"labels must be 0 or 1; 2 bad entries: h5:2=3, h5:4=7"):
        open_patch_dataset(tmp_path)
    with h5py.File(tmp_path / f"{PREFIX}_valid_y.h5", "w") as fh:
        fh.create_dataset("y", data=np.zeros((4, 1, 1, 1), np.uint8))
    with pytest.raises(DatasetError, match=r"y has shape \(4, 1, 1, 1\), expected \(5, 1, 1, 1\)"):
        open_patch_dataset(tmp_path)
    with h5py.File(tmp_path / f"{PREFIX}_valid_x.h5", "w") as fh:
        fh.create_dataset("x", data=np.zeros((5, 64, 64, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"x has shape \(5, 64, 64, 3\) uint8, expected \(N, 96, 96, 3\)"):
        open_patch_dataset(tmp_path)
    (tmp_path / f"{PREFIX}_valid_x.h5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        open_patch_dataset(tmp_path)
    (tmp_path / f"{PREFIX}_valid_y.h5").unlink()
    with pytest.raises(DatasetError, match=r"labels file for the 'valid' split .* is missing"):
        open_patch_dataset(tmp_path)


def test_real_pcam_sample(shared_data: Path) -> None:
    folder = shared_data / "pcam_h5_sample"
    sizes = {"train": 128, "valid": 64, "test": 64}
    for split, n in sizes.items():
        ds = open_patch_dataset(folder, split=split)
        assert len(ds) == n
        assert set(np.unique(ds.labels)) <= {0, 1} and 0 < ds.labels.sum() < n
        x = ds.read(np.arange(n)[::-1])
        assert x.shape == (n, 96, 96, 3) and 100 < x.mean() < 240
