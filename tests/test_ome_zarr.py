"""heatmap.zarr as an OME-Zarr (NGFF 0.4) image: validated with ome-zarr-models, opened by xarray and
dask, with micrometre scale and translation that put it on the slide (OpenSlide bounds included)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wsi_pipeline.outputs.heatmap_zarr import (
    NGFF_VERSION,
    downsample_mean,
    read_heatmap_zarr,
    write_heatmap_zarr,
)

MPP = 0.25
CELL = 388.8  # level-0 px per cell: 96 model px at 0.972 um/px on a 0.25 um/px slide
ORIGIN = (10.0, 20.0)  # level-0 top-left of cell (0, 0)
BOUNDS = (300, 200)  # OpenSlide bounds origin


@pytest.fixture
def heatmap() -> np.ndarray:
    rng = np.random.default_rng(0)
    hm = rng.random((15, 11)).astype(np.float32)
    hm[0, :] = np.nan
    hm[5:7, 3:9] = np.nan
    return hm


@pytest.fixture
def store(tmp_path, heatmap):
    attrs = {
        "mpp": MPP,
        "cell_size_level0_px": CELL,
        "cell_origin_level0": list(ORIGIN),
        "bounds_offset_level0": list(BOUNDS),
        "model_name": "default",
        "params": {"stride": None, "tumor_threshold": 0.5},
    }
    return write_heatmap_zarr(tmp_path / "heatmap.zarr", heatmap, attrs, chunk=8)


def test_store_is_zarr_v2_format_with_three_levels(store):
    assert json.loads((store / ".zgroup").read_text()) == {"zarr_format": 2}
    for level in ("0", "1", "2"):
        meta = json.loads((store / level / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and meta["dtype"] == "<f4" and meta["fill_value"] == "NaN"
    assert (store / ".zmetadata").is_file()  # consolidated: xarray opens it without a warning


def test_ngff_metadata_validates_with_ome_zarr_models(store):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("ome_zarr_models")
    from ome_zarr_models.v04.image import Image

    image = Image.from_zarr(zarr.open_group(str(store), mode="r"))
    (multiscale,) = image.attributes.multiscales
    assert multiscale.version == NGFF_VERSION
    assert [(a.name, a.type, a.unit) for a in multiscale.axes] == [
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2"]


def test_scale_and_translation_are_micrometres_from_the_bounds_origin(store):
    attrs = json.loads((store / ".zattrs").read_text())
    datasets = attrs["multiscales"][0]["datasets"]
    for level, dataset in enumerate(datasets):
        scale, translation = dataset["coordinateTransformations"]
        side = CELL * 2**level
        assert scale == {"type": "scale", "scale": pytest.approx([side * MPP, side * MPP])}
        # centre of cell (0, 0), in um, from QuPath's origin (the bounds' top-left)
        expected = [(ORIGIN[1] + side / 2 - BOUNDS[1]) * MPP, (ORIGIN[0] + side / 2 - BOUNDS[0]) * MPP]
        assert translation["type"] == "translation"
        assert translation["translation"] == pytest.approx(expected)
    # our own attributes stay in the group's attributes
    assert attrs["model_name"] == "default" and attrs["params"]["tumor_threshold"] == 0.5


def test_coarser_levels_are_nan_aware_means(store, heatmap):
    level1, _ = read_heatmap_zarr(store, level=1)
    level2, _ = read_heatmap_zarr(store, level=2)
    assert level1.shape == (8, 6) and level2.shape == (4, 3)
    block = heatmap[2:4, 4:6]
    assert level1[1, 2] == pytest.approx(np.nanmean(block))
    assert level1[0, 0] == pytest.approx(heatmap[1, :2].mean())  # row 0 is NaN: not analysed
    assert np.isnan(level1[2, 2]) == np.isnan(heatmap[4:6, 4:6]).all()
    assert level1[7, 5] == pytest.approx(heatmap[14, 10])  # a partial edge block: one cell
    np.testing.assert_array_equal(level2, downsample_mean(level1))
    only_nan = np.full((2, 2), np.nan, dtype=np.float32)
    assert np.isnan(downsample_mean(only_nan)).all()


def test_xarray_and_dask_open_it(store, heatmap):
    xr = pytest.importorskip("xarray")
    import dask.array as da

    dataset = xr.open_zarr(store)
    assert dataset["0"].dims == ("y", "x") and dataset["1"].dims == ("y1", "x1")
    np.testing.assert_array_equal(dataset["0"].values, heatmap)
    assert dataset.attrs["cell_size_level0_px"] == CELL
    np.testing.assert_array_equal(da.from_zarr(str(store), component="0").compute(), heatmap)
