"""The decode-once patch cache: built once, reused, rebuilt when the source changes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.data import open_patch_dataset
from wsi_pipeline.data.cache import IMAGES_FILE, cache_dataset, open_cache


def _dataset(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    with open(root / "train_labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("id", "label"))
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
                root / "train" / f"p{i}.png"
            )
            writer.writerow((f"p{i}", i % 2))
    return root


def test_cache_holds_the_decoded_pixels_and_is_reused(tmp_path: Path, monkeypatch) -> None:
    ds = open_patch_dataset(_dataset(tmp_path / "d"))
    cache = open_cache(ds, root=tmp_path / "c")
    np.testing.assert_array_equal(np.asarray(cache.images), ds.read(np.arange(len(ds))))
    np.testing.assert_array_equal(cache.labels, ds.labels)
    assert isinstance(cache.images, np.memmap) and not cache.images.flags.writeable

    # Reopening decodes nothing.
    calls = []
    monkeypatch.setattr(
        type(ds), "read", lambda self, idx: calls.append(idx) or np.zeros((len(idx), 96, 96, 3), np.uint8)
    )
    again = open_cache(ds, root=tmp_path / "c")
    assert again.folder == cache.folder and calls == []
    assert len([p for p in (tmp_path / "c").iterdir()]) == 1  # no temporary folder left behind


def test_a_changed_file_or_another_sample_gets_its_own_cache(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d")
    ds = open_patch_dataset(root)
    first = open_cache(ds, root=tmp_path / "c")
    sample = open_cache(ds, np.array([1, 4, 7]), root=tmp_path / "c")
    assert sample.folder != first.folder and sample.images.shape[0] == 3
    np.testing.assert_array_equal(np.asarray(sample.images), ds.read(np.array([1, 4, 7])))
    # Replace one patch file (new content, new mtime): the cache is rebuilt with the new pixels.
    new = np.full((96, 96, 3), 7, np.uint8)
    Image.fromarray(new).save(root / "train" / "p3.png")
    os.utime(root / "train" / "p3.png", ns=(1, 1))
    rebuilt = open_cache(open_patch_dataset(root), root=tmp_path / "c")
    assert rebuilt.folder != first.folder
    np.testing.assert_array_equal(np.asarray(rebuilt.images[3]), new)


def test_a_truncated_cache_is_rebuilt(tmp_path: Path) -> None:
    ds = open_patch_dataset(_dataset(tmp_path / "d"))
    cache = open_cache(ds, root=tmp_path / "c")
    folder = cache.folder
    del cache
    (folder / IMAGES_FILE).write_bytes((folder / IMAGES_FILE).read_bytes()[:1000])
    again = open_cache(ds, root=tmp_path / "c")
    np.testing.assert_array_equal(np.asarray(again.images), ds.read(np.arange(len(ds))))


def test_cached_dataset_reads_rows_in_any_order(tmp_path: Path) -> None:
    ds = open_patch_dataset(_dataset(tmp_path / "d"))
    view = cache_dataset(open_cache(ds, root=tmp_path / "c"))
    order = np.array([5, 0, 5, 11, 2])
    np.testing.assert_array_equal(view.read(order), ds.read(order))
    assert len(view) == len(ds) and list(view.labels) == list(ds.labels)


def test_unwritable_cache_folder_is_a_dataset_error(tmp_path: Path) -> None:
    from wsi_pipeline.errors import DatasetError

    ds = open_patch_dataset(_dataset(tmp_path / "d"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match="cannot create patch cache"):
        open_cache(ds, root=blocker / "sub")
