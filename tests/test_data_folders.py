"""Class-folder layout DIR/0, DIR/1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.data import ClassFolderDataset, detect_layout, open_patch_dataset
from wsi_pipeline.errors import DatasetError


def _save(path: Path, seed: int, size: int = 96) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def test_reads_both_classes(tmp_path: Path) -> None:
    a = _save(tmp_path / "0" / "b.png", 1)
    b = _save(tmp_path / "0" / "a.png", 2)
    c = _save(tmp_path / "1" / "z.tif", 3)
    (tmp_path / "notes.txt").write_text("ignored")
    assert detect_layout(tmp_path) == "folders"
    ds = open_patch_dataset(tmp_path)
    assert isinstance(ds, ClassFolderDataset)
    assert ds.ids == ["0/a", "0/b", "1/z"]
    assert ds.labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(ds.read(np.array([2, 1, 0])), np.stack([c, a, b]))


def test_grayscale_is_converted_to_rgb(tmp_path: Path) -> None:
    gray = np.full((96, 96), 77, np.uint8)
    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    Image.fromarray(gray).save(tmp_path / "1" / "g.png")
    out = open_patch_dataset(tmp_path).read(np.array([0]))
    assert out.shape == (1, 96, 96, 3) and (out == 77).all()


def test_bad_folders(tmp_path: Path) -> None:
    _save(tmp_path / "0" / "a.png", 1)
    with pytest.raises(DatasetError, match=r"class folders \['1'\] missing"):
        open_patch_dataset(tmp_path)
    _save(tmp_path / "1" / "b.png", 2)
    _save(tmp_path / "2" / "c.png", 3)
    with pytest.raises(DatasetError, match=r"1 image folders other than 0/ and 1/ .*: 2$"):
        open_patch_dataset(tmp_path)
    (tmp_path / "2" / "c.png").unlink()
    _save(tmp_path / "1" / "big.png", 4, size=128)
    with pytest.raises(DatasetError, match=r"1 of 3 checked patch files .*: big.png \(128x128\)"):
        open_patch_dataset(tmp_path)
    (tmp_path / "1" / "big.png").unlink()
    (tmp_path / "0" / "a.png").unlink()
    (tmp_path / "1" / "b.png").unlink()
    with pytest.raises(DatasetError, match="dataset holds no patches"):
        open_patch_dataset(tmp_path)
