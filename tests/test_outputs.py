"""Output writers (one module per format under wsi_pipeline.outputs) and the atomic output folder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import shape

from wsi_pipeline.colormap import inferno
from wsi_pipeline.errors import OutputError
from wsi_pipeline.files import atomic_output_dir, json_safe
from wsi_pipeline.lesions import apply_rule
from wsi_pipeline.models.calibration import DecisionRule
from wsi_pipeline.outputs.geojson import cells_to_geometry, tumour_features, write_geojson
from wsi_pipeline.outputs.heatmap_zarr import read_heatmap_zarr, write_heatmap_zarr
from wsi_pipeline.outputs.overlay import write_overlay_png
from wsi_pipeline.outputs.tiles_csv import probability_columns, write_tiles_csv
from wsi_pipeline.tiling import CellGeometry


def test_atomic_dir_appears_only_when_complete(tmp_path):
    with atomic_output_dir(tmp_path, "slide") as tmp:
        (tmp / "a.txt").write_text("x")
        assert tmp.name.startswith(".slide.tmp-")
        assert not (tmp_path / "slide").exists()
    assert (tmp_path / "slide" / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["slide"]


def test_failure_removes_temp_and_keeps_previous_result(tmp_path):
    (tmp_path / "slide").mkdir()
    (tmp_path / "slide" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output_dir(tmp_path, "slide") as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["slide"]
    assert [p.name for p in (tmp_path / "slide").iterdir()] == ["old.txt"]


def test_success_replaces_previous_result(tmp_path):
    (tmp_path / "slide").mkdir()
    (tmp_path / "slide" / "old.txt").write_text("old")
    with atomic_output_dir(tmp_path, "slide") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide"]
    assert [p.name for p in (tmp_path / "slide").iterdir()] == ["new.txt"]


def test_output_root_that_is_a_file_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot create output folder"), atomic_output_dir(blocker, "s"):
        pass


def test_heatmap_zarr_round_trip(tmp_path):
    hm = np.array([[0.1, np.nan, 0.9], [np.nan, 0.5, 0.0]], dtype=np.float32)
    attrs = {
        "cell_size_level0_px": 2.0,
        "cell_origin_level0": (1, 2),
        "mpp": np.float64(0.5),
        "score": float("nan"),
    }
    write_heatmap_zarr(tmp_path / "h.zarr", hm, attrs, chunk=2)
    back, got = read_heatmap_zarr(tmp_path / "h.zarr")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back), np.isnan(hm))
    np.testing.assert_allclose(back[~np.isnan(back)], hm[~np.isnan(hm)])
    ours = {key: value for key, value in got.items() if key != "multiscales"}
    assert ours == {"cell_size_level0_px": 2.0, "cell_origin_level0": [1, 2], "mpp": 0.5, "score": None}
    with pytest.raises(ValueError, match="lack mpp"):
        write_heatmap_zarr(
            tmp_path / "x.zarr", hm, {"cell_size_level0_px": 2.0, "cell_origin_level0": [0, 0]}
        )
    with pytest.raises(OutputError, match="cannot read the heatmap"):
        read_heatmap_zarr(tmp_path / "missing.zarr")


def test_json_safe(tmp_path):
    data = {"a": np.int64(3), "b": np.array([1.5, np.inf]), "c": (tmp_path, float("nan"))}
    assert json_safe(data) == {"a": 3, "b": [1.5, None], "c": [str(tmp_path), None]}
    assert json.loads(json.dumps(json_safe(data)))["a"] == 3
    with pytest.raises(TypeError, match="not a JSON value"):
        json_safe({"a": object()})


def test_tiles_csv_layout(tmp_path):
    boxes = np.array([[0, 0, 187.2, 187.2], [187.2, 0, 187.2, 187.2]])
    write_tiles_csv(tmp_path / "t.csv", boxes, np.array([0.25, 0.123456789]))
    rows = list(csv.DictReader((tmp_path / "t.csv").read_text().splitlines()))
    assert list(rows[0]) == ["minx", "miny", "width", "height", "prob_normal", "prob_tumor"]
    assert rows[1] == {"minx": "187", "miny": "0", "width": "187", "height": "187",
                       "prob_normal": "0.876543", "prob_tumor": "0.123457"}  # fmt: skip
    with pytest.raises(ValueError, match="probabilities"):
        write_tiles_csv(tmp_path / "x.csv", boxes, np.array([0.1]))


def test_tiles_csv_has_a_column_per_class_and_keeps_prob_tumor(tmp_path):
    boxes = np.array([[0, 0, 96, 96]])
    write_tiles_csv(tmp_path / "t.csv", boxes, np.array([0.75]), ("benign tissue", "metastasis"))
    (row,) = csv.DictReader((tmp_path / "t.csv").read_text().splitlines())
    assert row == {"minx": "0", "miny": "0", "width": "96", "height": "96", "prob_benign_tissue": "0.250000",
                   "prob_metastasis": "0.750000", "prob_tumor": "0.750000"}  # fmt: skip
    assert probability_columns(["normal", "tumor"]) == ["prob_normal", "prob_tumor"]
    with pytest.raises(ValueError, match="duplicate"):
        probability_columns(["a b", "a_b"])


def test_cells_to_geometry_unions_footprints():
    geo = CellGeometry(origin_x=10.0, origin_y=20.0, size=4.0)
    cells = np.array([[0, 0], [0, 1], [1, 1], [3, 3]])  # L-shape plus a separate cell
    g = cells_to_geometry(cells, geo)
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 2
    assert g.area == pytest.approx(4 * 16)
    assert g.bounds == (10.0, 20.0, 26.0, 36.0)
    ring = np.argwhere(np.ones((3, 3), bool))
    ring = ring[~((ring[:, 0] == 1) & (ring[:, 1] == 1))]
    donut = cells_to_geometry(ring, geo)
    assert donut.geom_type == "Polygon" and len(donut.interiors) == 1 and donut.area == pytest.approx(8 * 16)


def test_geojson_is_a_qupath_annotation_collection(tmp_path):
    hm = np.zeros((10, 10), dtype=np.float32)
    hm[1:3, 1:4] = 0.9
    hm[7, 7] = 0.8
    agg = apply_rule(hm, 50.0, DecisionRule(high=0.8, low=0.5, support_mm2=0.0))
    geo = CellGeometry(0.0, 0.0, 100.0)
    write_geojson(tmp_path / "t.geojson", tumour_features(agg.regions, geo))
    data = json.loads((tmp_path / "t.geojson").read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    for feature in data["features"]:
        assert feature["type"] == "Feature"
        assert feature["properties"]["objectType"] == "annotation"
        assert feature["properties"]["classification"]["name"] == "Tumor"
        assert shape(feature["geometry"]).is_valid
    assert sorted(f["properties"]["measurements"]["confidence"] for f in data["features"]) == pytest.approx(
        [0.8, 0.9]
    )
    areas = sorted(shape(f["geometry"]).area for f in data["features"])
    assert areas == [100.0**2, 6 * 100.0**2]
    assert shapely.box(100, 100, 400, 300).equals(
        shape(max(data["features"], key=lambda f: shape(f["geometry"]).area)["geometry"])
    )


def test_overlay_png_is_transparent_below_low_probability_and_outlines(tmp_path):
    """Cells from 0.2 on are blended (opaque 0.7 at >= 0.5, inferno); lower and NaN cells leave the
    slide as it is; regions are outlined in cyan, the analysed cells in green; a scale bar is drawn."""
    thumb = np.full((200, 320, 3), 128, dtype=np.uint8)
    hm = np.full((20, 32), np.nan, dtype=np.float32)
    hm[2:18, 2:16] = 1.0  # one cell = 40 level-0 px = 10 thumbnail px
    hm[2:18, 16:30] = 0.1  # analysed, low: transparent
    rings = [[(80.0, 80.0), (400.0, 80.0), (400.0, 400.0), (80.0, 400.0)]]
    write_overlay_png(tmp_path / "o.png", thumb, 4.0, hm, CellGeometry(0, 0, 40.0), title="slide: call",
                      regions=[rings], mpp=0.5)  # fmt: skip
    image = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)
    grey = (image == 128).all(axis=-1)
    ys, xs = np.nonzero(grey)
    top, left = ys.min(), xs.min()  # the thumbnail's top-left corner is glass (NaN)
    assert image.shape[0] > 200 + top and image.shape[1] > 320 + left
    picture = image[top : top + 200, left : left + 320]
    hot = np.rint(0.3 * 128 + 0.7 * np.array([252, 255, 164]))
    np.testing.assert_array_equal(picture[50:70, 50:70], np.broadcast_to(hot, (20, 20, 3)))
    assert (picture[30:170, 170:290] == 128).all()  # 0.1: the slide shows through
    green, cyan = np.array([0, 120, 60]), np.array([0, 229, 255])
    assert (picture[20, 110:290] == green).all()  # top edge of the analysed cells (right of the region)
    assert (picture[19, 30:290] == 128).all()
    assert (picture[20:22, 25:95] == cyan).all(axis=-1).any()  # the region's outline
    assert ((picture[150:200, :160] == 0).all(axis=-1)).sum() > 50  # scale bar (black)


def test_overlay_thumbnail_size_is_capped_and_never_upsampled():
    from wsi_pipeline.outputs.overlay import OVERLAY_MAX_SIDE, thumbnail_size

    assert OVERLAY_MAX_SIDE == 2048
    assert thumbnail_size((100_000, 60_000)) == 2048 and thumbnail_size((1101, 900)) == 1101


def test_scale_bar_lengths_are_round():
    from wsi_pipeline.outputs.overlay_draw import length_label, nice_length_um

    assert [nice_length_um(v) for v in (0.9, 3.0, 740.0, 1999.0, 12_000.0)] == [
        0.5,
        2.0,
        500.0,
        1000.0,
        10_000.0,
    ]
    assert length_label(500.0) == "500 µm" and length_label(2000.0) == "2 mm"


def test_inferno_matches_matplotlib():
    import matplotlib as mpl

    values = np.linspace(0.0, 1.0, 256)
    reference = mpl.colormaps["inferno"](values)[:, :3] * 255
    assert np.abs(inferno(values) - reference).max() < 5.0
