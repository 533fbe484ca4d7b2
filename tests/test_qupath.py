"""What QuPath imports: tumor.geojson (annotations) and tiles.geojson (detections with prob_<class>
measurements) in QuPath's documented GeoJSON shapes, and every written coordinate relative to the
OpenSlide bounds on a real slide with bounds (a Leica SCN, as QuPath crops MRXS/SCN to them)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import OUTPUTS, has_outputs, read_heatmap_zarr, tiles_geojson
from wsi_pipeline.outputs.tiles_geojson import read_tiles_geojson, tile_features, write_tiles_geojson
from wsi_pipeline.pipeline import run_slide
from wsi_pipeline.testing import load_probe_model, write_leica_scn
from wsi_pipeline.tiling import CellGeometry
from wsi_pipeline.viewer.results import load_result_folder

CELL = 64  # level-0 px per tile: 32 model px at 1 um/px on a 0.5 um/px slide
BOUNDS = (320, 192)  # where the scanned image lies in the Leica collection (level-0 px)
TUMOUR, NORMAL = (220, 40, 90), (80, 60, 200)
OBJECT_TYPES = {"annotation", "detection", "tile", "cell"}


def _check_qupath_feature(feature: dict, object_type: str) -> None:
    """The shape QuPath's GeoJSON import documents: a Feature whose geometry is a (Multi)Polygon and
    whose properties hold objectType, classification {name, color} and measurements (an object)."""
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert shape(feature["geometry"]).is_valid
    props = feature["properties"]
    assert props["objectType"] == object_type and object_type in OBJECT_TYPES
    classification = props["classification"]
    assert set(classification) == {"name", "color"} and isinstance(classification["name"], str)
    assert len(classification["color"]) == 3 and all(0 <= int(v) <= 255 for v in classification["color"])
    assert isinstance(props["measurements"], dict)
    assert all(isinstance(v, (int, float)) for v in props["measurements"].values())


@pytest.fixture(scope="module")
def leica_result(tmp_path_factory):
    root = tmp_path_factory.mktemp("leica")
    image = np.full((8 * CELL, 10 * CELL, 3), 255, dtype=np.uint8)
    image[CELL : 7 * CELL, CELL : 9 * CELL] = NORMAL
    image[2 * CELL : 5 * CELL, 3 * CELL : 7 * CELL] = TUMOUR
    slide = write_leica_scn(root / "leica.scn", image, mpp=0.5, offset=BOUNDS)
    probe = load_probe_model(root / "probe", patch_size=32, mpp=1.0)
    return run_slide(slide, root / "out", InferenceOptions(lesion_support_mm2=0.0), probe)


def test_the_reader_and_summary_record_the_bounds(leica_result):
    info = leica_result.summary.slide_info
    assert info.format == "openslide:leica"
    assert info.bounds == (*BOUNDS, 10 * CELL, 8 * CELL) and info.bounds_offset == BOUNDS
    saved = json.loads((leica_result.out_dir / "summary.json").read_text())
    assert saved["slide_info"]["bounds"] == [*BOUNDS, 10 * CELL, 8 * CELL]


def test_tumor_geojson_is_offset_to_the_bounds(leica_result):
    collection = json.loads((leica_result.out_dir / "tumor.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    (feature,) = collection["features"]
    _check_qupath_feature(feature, "annotation")
    # in QuPath's coordinates the tumour block is where it is in the scanned image
    assert shape(feature["geometry"]).equals(shapely.box(3 * CELL, 2 * CELL, 7 * CELL, 5 * CELL))


def test_tiles_geojson_is_one_detection_per_tissue_tile(leica_result):
    collection = read_tiles_geojson(leica_result.out_dir)
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == leica_result.summary.n_tiles_tissue == 48
    tumour = []
    for feature in features:
        _check_qupath_feature(feature, "detection")
        measurements = feature["properties"]["measurements"]
        assert set(measurements) == {"prob_normal", "prob_tumor"}
        assert measurements["prob_normal"] + measurements["prob_tumor"] == pytest.approx(1.0, abs=2e-6)
        is_tumour = measurements["prob_tumor"] >= 0.5
        assert feature["properties"]["classification"]["name"] == ("Tumor" if is_tumour else "Normal")
        if is_tumour:
            tumour.append(shape(feature["geometry"]))
    assert shapely.union_all(tumour).equals(shapely.box(3 * CELL, 2 * CELL, 7 * CELL, 5 * CELL))
    assert all(g.area == pytest.approx(CELL**2) for g in tumour)


def test_tiles_csv_and_zarr_translation_are_offset_to_the_bounds(leica_result):
    with open(leica_result.out_dir / "tiles.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[4:] == ["prob_normal", "prob_tumor"]
    hot = {(int(r["minx"]), int(r["miny"])) for r in rows if float(r["prob_tumor"]) >= 0.5}
    assert hot == {(c * CELL, r * CELL) for r in range(2, 5) for c in range(3, 7)}
    _, attrs = read_heatmap_zarr(leica_result.out_dir / "heatmap.zarr")
    scale, translation = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    x0, y0 = attrs["cell_origin_level0"]  # level-0 px of the whole collection
    assert translation["translation"] == pytest.approx(
        [(y0 + CELL / 2 - BOUNDS[1]) * 0.5, (x0 + CELL / 2 - BOUNDS[0]) * 0.5]
    )
    assert scale["scale"] == pytest.approx([CELL * 0.5, CELL * 0.5])
    assert attrs["bounds_offset_level0"] == list(BOUNDS)


def test_the_viewer_reads_outlines_back_in_slide_pixels(leica_result):
    data = load_result_folder(leica_result.out_dir, leica_result.summary.slide_info.dimensions)
    (lesion,) = data.lesions
    x0, y0, x1, y1 = lesion.bounds  # level-0 px of the slide as OpenSlide reads it (no crop)
    assert (x0, y0, x1, y1) == (
        BOUNDS[0] + 3 * CELL,
        BOUNDS[1] + 2 * CELL,
        BOUNDS[0] + 7 * CELL,
        BOUNDS[1] + 5 * CELL,
    )


def test_large_tile_collections_are_gzipped(tmp_path, monkeypatch):
    cells = np.array([[0, 0], [0, 1], [1, 1]])
    collection = tile_features(cells, np.array([0.2, 0.6, 0.9]), CellGeometry(0, 0, 10), ["normal", "tumor"])
    assert write_tiles_geojson(tmp_path, collection).name == "tiles.geojson"
    monkeypatch.setattr(tiles_geojson, "GZIP_ABOVE_BYTES", 100)
    gz_folder = tmp_path / "gz"
    gz_folder.mkdir()
    assert write_tiles_geojson(gz_folder, collection).name == "tiles.geojson.gz"
    assert read_tiles_geojson(gz_folder) == read_tiles_geojson(tmp_path) == collection
    (entry,) = [o for o in OUTPUTS if o.name == "tiles.geojson"]
    assert entry.written_name(gz_folder) == "tiles.geojson.gz" and entry.written_name(tmp_path / "x") is None


def test_resume_wants_the_outputs_the_options_ask_for(leica_result, tmp_path):
    folder = leica_result.out_dir
    assert has_outputs(folder, InferenceOptions()) and has_outputs(folder, InferenceOptions(viewer=False))
    (tmp_path / "slide").mkdir()
    for name in (
        "heatmap.zarr",
        "summary.json",
        "tiles.csv",
        "tumor.geojson",
        "tiles.geojson.gz",
        "overlay.png",
        "manifest.json",
    ):
        (tmp_path / "slide" / name).write_text("x")
    assert has_outputs(tmp_path / "slide", InferenceOptions(viewer=False))
    assert not has_outputs(tmp_path / "slide", InferenceOptions())  # no viewer.html
