"""Kaggle layout (train/<id>.ext + train_labels.csv): reading, detection and every bad-input path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_pipeline.data import KaggleDataset, detect_layout, load_arrays, open_patch_dataset
from wsi_pipeline.errors import DatasetError


def _patch(seed: int, size: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def make_kaggle(
    root: Path, labels: dict[str, int], ext: str = "png", csv_extra: str = ""
) -> dict[str, np.ndarray]:
    """Write a Kaggle-layout set of lossless patches; returns id -> pixels."""
    (root / "train").mkdir(parents=True)
    pixels = {}
    for k, ident in enumerate(labels):
        arr = _patch(k)
        pixels[ident] = arr
        if ext == "tif":
            tifffile.imwrite(root / "train" / f"{ident}.tif", arr, photometric="rgb")
        else:
            Image.fromarray(arr).save(root / "train" / f"{ident}.{ext}")
    lines = ["id,label"] + [f"{i},{lab}" for i, lab in labels.items()]
    (root / "train_labels.csv").write_text("\n".join(lines) + "\n" + csv_extra)
    return pixels


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_reads_exact_pixels_in_csv_order(tmp_path: Path, ext: str) -> None:
    labels = {"b2": 1, "a1": 0, "c3": 1, "d4": 0}
    pixels = make_kaggle(tmp_path, labels, ext=ext)
    ds = open_patch_dataset(tmp_path)
    assert isinstance(ds, KaggleDataset)
    assert ds.ids == ["b2", "a1", "c3", "d4"]
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [1, 0, 1, 0]
    out = ds.read(np.array([2, 0, 2]))
    assert out.dtype == np.uint8 and out.shape == (3, 96, 96, 3)
    np.testing.assert_array_equal(out[0], pixels["c3"])
    np.testing.assert_array_equal(out[1], pixels["b2"])
    np.testing.assert_array_equal(out[2], pixels["c3"])
    assert ds.describe() == {"n": 4, "n_tumor": 2, "source": "KaggleDataset", "path": str(tmp_path)}


def test_threaded_read_matches_serial(tmp_path: Path) -> None:
    labels = {f"p{i:03d}": i % 2 for i in range(40)}
    pixels = make_kaggle(tmp_path, labels)
    ds = open_patch_dataset(tmp_path)
    x, y = load_arrays(ds, chunk=7)
    assert x.shape == (40, 96, 96, 3)
    np.testing.assert_array_equal(y, [i % 2 for i in range(40)])
    for k, ident in enumerate(labels):
        np.testing.assert_array_equal(x[k], pixels[ident])


def test_csv_path_is_accepted(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {"a": 0, "b": 1})
    assert detect_layout(tmp_path / "train_labels.csv") == "kaggle"
    assert len(open_patch_dataset(tmp_path / "train_labels.csv")) == 2


def test_id_without_file_reports_count_and_names(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {"a": 0, "b": 1}, csv_extra="ghost1,0\nghost2,1\n")
    with pytest.raises(DatasetError, match=r"2 ids in train_labels.csv have no image file: ghost1, ghost2$"):
        open_patch_dataset(tmp_path)


def test_file_without_label(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {"a": 0, "b": 1})
    for k in range(7):
        Image.fromarray(_patch(100 + k)).save(tmp_path / "train" / f"orphan{k}.png")
    expected = r"7 image files have no label.*: orphan0, orphan1, orphan2, orphan3, orphan4, ... \(\+2 more\)"
    with pytest.raises(DatasetError, match=expected):
        open_patch_dataset(tmp_path)


def test_labels_not_binary(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {"a": 0, "b": 2, "c": 1, "d": -1})
    expected = r"labels must be 0 or 1; 2 bad rows: b='2' \(line 3\), d='-1' \(line 5\)$"
    with pytest.raises(DatasetError, match=expected):
        open_patch_dataset(tmp_path)


def test_bad_header_and_duplicates(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {"a": 0, "b": 1})
    (tmp_path / "train_labels.csv").write_text("name,class\na,0\n")
    with pytest.raises(DatasetError, match="must have columns 'id' and 'label'"):
        open_patch_dataset(tmp_path)
    (tmp_path / "train_labels.csv").write_text("id,label\na,0\nb,1\na,1\n")
    with pytest.raises(DatasetError, match="1 duplicate ids in labels CSV: a$"):
        open_patch_dataset(tmp_path)
    (tmp_path / "train_labels.csv").write_text("")
    with pytest.raises(DatasetError, match="labels CSV is empty"):
        open_patch_dataset(tmp_path)


def test_wrong_size_and_unreadable_are_listed(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {"a": 0, "b": 1, "c": 0, "d": 1})
    Image.fromarray(_patch(9, size=64)).save(tmp_path / "train" / "b.png")
    (tmp_path / "train" / "d.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError) as info:
        open_patch_dataset(tmp_path)
    msg = str(info.value)
    assert "2 of 4 checked patch files" in msg
    assert "b.png (64x64)" in msg and "d.png (unreadable" in msg


def test_decode_error_during_read_names_file(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {f"p{i}": i % 2 for i in range(20)})
    ds = open_patch_dataset(tmp_path, check="none")
    bad = tmp_path / "train" / "p13.png"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated after the checks
    assert ds.read(np.arange(13)).shape == (13, 96, 96, 3)
    with pytest.raises(DatasetError, match=r"p13\.png: cannot decode image"):
        ds.read(np.arange(20))


def test_same_id_two_extensions(tmp_path: Path) -> None:
    make_kaggle(tmp_path, {"a": 0, "b": 1})
    Image.fromarray(_patch(1)).save(tmp_path / "train" / "a.jpg")
    with pytest.raises(DatasetError, match="1 ids have several image files: a$"):
        open_patch_dataset(tmp_path)


def test_incomplete_and_unknown_layouts(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset path not found"):
        open_patch_dataset(tmp_path / "nope")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="Kaggle layout is incomplete: train_labels.csv is missing"):
        open_patch_dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="unrecognised dataset layout"):
        open_patch_dataset(empty)


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train_labels.csv").write_text("id,label\n")
    with pytest.raises(DatasetError, match="labels CSV has no rows"):
        open_patch_dataset(tmp_path)


def test_real_hcd_patches(shared_data: Path) -> None:
    ds = open_patch_dataset(shared_data / "hcd_patches", check="sample")
    assert len(ds) == 9491
    assert int(ds.labels.sum()) == 3836
    x = ds.read(np.arange(0, 9491, 50))
    assert x.shape == (190, 96, 96, 3) and x.dtype == np.uint8
    assert 100 < x.mean() < 240  # real H&E, not blank


def test_real_original_tiffs_match_jpegs(shared_data: Path) -> None:
    tifs = open_patch_dataset(shared_data / "hcd_original_tiffs", check="full")
    jpgs = open_patch_dataset(shared_data / "hcd_patches", check="none")
    assert len(tifs) == 64
    where = {ident: k for k, ident in enumerate(jpgs.ids)}
    rows = np.array([where[i] for i in tifs.ids])
    np.testing.assert_array_equal(jpgs.labels[rows], tifs.labels)
    a, b = load_arrays(tifs)[0].astype(np.int16), jpgs.read(rows).astype(np.int16)
    assert np.abs(a - b).mean() < 5  # JPEG q90 re-encode of the same pixels
