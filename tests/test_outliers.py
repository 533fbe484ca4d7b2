"""Outlier detection: each kind on synthetic patches, streaming order, and the real set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.data import OutlierThresholds, find_outliers, open_patch_dataset
from wsi_pipeline.data.outliers import classify_patches, patch_statistics


def _tissue(seed: int) -> np.ndarray:
    """High-frequency texture: sharp, mid-grey, high contrast."""
    return np.random.default_rng(seed).integers(40, 220, (96, 96, 3), dtype=np.uint8)


def _blurry(seed: int) -> np.ndarray:
    ramp = np.linspace(60, 200, 96, dtype=np.float32)
    grey = ramp[None, :] + np.random.default_rng(seed).normal(0, 0.5, (96, 96))
    return np.repeat(grey[..., None], 3, axis=-1).clip(0, 255).astype(np.uint8)


def test_patch_statistics_hand_computed() -> None:
    flat = np.full((1, 96, 96, 3), 90, np.uint8)
    mean, std, lap = patch_statistics(flat)
    assert mean[0] == pytest.approx(90) and std[0] == 0 and lap[0] == 0
    dot = np.zeros((1, 96, 96, 3), np.uint8)
    dot[0, 50, 50] = 255
    _, _, lap = patch_statistics(dot)
    # Laplacian: -4*255 at the dot, +255 at its 4 neighbours, 0 elsewhere on a 94x94 grid.
    values = np.zeros(94 * 94)
    values[:5] = [-1020, 255, 255, 255, 255]
    assert lap[0] == pytest.approx(values.var(), rel=1e-5)


def test_classify_each_kind() -> None:
    white = np.full((96, 96, 3), 240, np.uint8)
    black = np.full((96, 96, 3), 5, np.uint8)
    patches = np.stack([_tissue(0), white, black, _blurry(1)])
    assert classify_patches(patches).tolist() == ["", "white", "black", "blurry"]
    loose = OutlierThresholds(white_min_mean=250.0, blur_max_laplacian_var=0.0)
    assert classify_patches(patches, loose).tolist() == ["", "", "black", ""]


def test_find_outliers_streams_and_keeps_first_duplicate(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    patches = [_tissue(i) for i in range(10)]
    patches[7] = patches[2].copy()  # duplicate, same label
    patches[9] = patches[4].copy()  # duplicate, different label
    patches[3] = np.full((96, 96, 3), 245, np.uint8)
    patches[5] = np.full((96, 96, 3), 245, np.uint8)  # white twice: counted as white, not duplicate
    patches[6] = _blurry(2)
    labels = [0, 1, 0, 0, 1, 0, 1, 0, 1, 0]
    rows = ["id,label"]
    for i, (arr, lab) in enumerate(zip(patches, labels, strict=True)):
        Image.fromarray(arr).save(tmp_path / "train" / f"p{i}.png")
        rows.append(f"p{i},{lab}")
    (tmp_path / "train_labels.csv").write_text("\n".join(rows) + "\n")
    ds = open_patch_dataset(tmp_path)
    report = find_outliers(ds, chunk_size=3)  # duplicates span chunks
    assert report.counts == {"black": 0, "white": 2, "blurry": 1, "duplicate": 2}
    assert report.by_kind["duplicate"].tolist() == [7, 9]
    assert report.drop.tolist() == [3, 5, 6, 7, 9]
    assert report.keep.tolist() == [0, 1, 2, 4, 8]
    assert report.label_conflicts == [(4, 9)]
    assert report.format() == "outliers: 5 of 10 patches (black 0, white 2, blurry 1, duplicate 2)"
    assert report.summary()["label_conflicts"] == 1
    # Restricting the scan to some indices reports only those.
    part = find_outliers(ds, indices=np.array([0, 2, 7]))
    assert part.drop.tolist() == [7] and part.keep.tolist() == [0, 2]
    off = find_outliers(ds, OutlierThresholds(check_duplicates=False))
    assert off.counts["duplicate"] == 0


def test_real_patches_flag_few(shared_data: Path) -> None:
    ds = open_patch_dataset(shared_data / "hcd_patches", check="none")
    report = find_outliers(ds, indices=np.arange(0, 9491, 10))
    assert report.n == 950
    # The defaults flag under 2 % of real patches; most real patches are kept.
    assert 0 < len(report.drop) < 0.02 * 950
