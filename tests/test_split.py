"""Seeded stratified split and sample."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.data import SubsetDataset, open_patch_dataset, stratified_sample, stratified_split
from wsi_pipeline.errors import OptionError


def test_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.array([0] * 600 + [1] * 400)
    train, val = stratified_split(labels, 0.2, seed=3)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert len(val) == 200 and len(train) == 800
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(1000))
    assert labels[val].sum() == 80  # 20 % of each class
    assert (np.diff(val) > 0).all()
    again, val2 = stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(val, val2)
    _, other = stratified_split(labels, 0.2, seed=4)
    assert not np.array_equal(val, other)


def test_split_keeps_each_class_on_both_sides() -> None:
    labels = np.array([0] * 50 + [1] * 2)
    train, val = stratified_split(labels, 0.1, seed=0)
    assert labels[val].sum() == 1 and labels[train].sum() == 1


def test_split_rejects_bad_fraction() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(OptionError, match="val_fraction must be between 0 and 1"):
            stratified_split(np.zeros(10), bad, 0)


def test_sample_exact_size_and_proportions() -> None:
    labels = np.array([0] * 700 + [1] * 300)
    idx = stratified_sample(labels, 101, seed=1)
    assert len(idx) == 101 and len(np.unique(idx)) == 101
    assert labels[idx].sum() in (30, 31)
    np.testing.assert_array_equal(idx, stratified_sample(labels, 101, seed=1))
    np.testing.assert_array_equal(stratified_sample(labels, 5000, seed=1), np.arange(1000))
    with pytest.raises(OptionError, match="sample size must be positive"):
        stratified_sample(labels, 0)


def test_subset_on_real_data(shared_data) -> None:
    ds = open_patch_dataset(shared_data / "pcam_h5_sample", split="train")
    train, val = stratified_split(ds.labels, 0.25, seed=0)
    sub = SubsetDataset(ds, val)
    assert len(sub) == len(val)
    np.testing.assert_array_equal(sub.labels, ds.labels[val])
    np.testing.assert_array_equal(sub.read(np.array([1, 0])), ds.read(val[[1, 0]]))
    assert sub.ids[0] == f"h5:{val[0]}"
    assert sub.describe()["subset_of"] == 128
