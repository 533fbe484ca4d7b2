"""Labelled patch datasets (Kaggle, PCam HDF5, class folders), splits and outlier checks."""

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.data.folders import ClassFolderDataset
from wsi_pipeline.data.images import ImageFileDataset
from wsi_pipeline.data.kaggle import KaggleDataset
from wsi_pipeline.data.loading import iter_batches, load_arrays
from wsi_pipeline.data.open import detect_layout, open_patch_dataset
from wsi_pipeline.data.outliers import OutlierReport, OutlierThresholds, find_outliers
from wsi_pipeline.data.pcam_h5 import PCamH5Dataset, open_pcam
from wsi_pipeline.data.split import stratified_sample, stratified_split
from wsi_pipeline.data.subset import SubsetDataset

__all__ = [
    "ClassFolderDataset",
    "ImageFileDataset",
    "KaggleDataset",
    "OutlierReport",
    "OutlierThresholds",
    "PCamH5Dataset",
    "PatchDataset",
    "SubsetDataset",
    "detect_layout",
    "find_outliers",
    "iter_batches",
    "load_arrays",
    "open_patch_dataset",
    "open_pcam",
    "stratified_sample",
    "stratified_split",
]
