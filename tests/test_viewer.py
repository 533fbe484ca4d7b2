"""Review view without a browser: data checks, the Deep Zoom pyramid, layers, page and results folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from viewer_fixtures import CELL, CELL_ORIGIN, SIZE, TUMOUR_PROB, review_data, write_review_slide

from wsi_pipeline.colormap import inferno
from wsi_pipeline.slide import open_slide
from wsi_pipeline.testing.slides import write_pyramidal_tiff
from wsi_pipeline.viewer import Lesion, ViewerData, write_viewer
from wsi_pipeline.viewer.layers import MIN_ALPHA, heatmap_layer, heatmap_rgba, lesion_entries
from wsi_pipeline.viewer.page import TileSource, page_data, render_page
from wsi_pipeline.viewer.pyramid import halve, level_sizes, write_pyramid
from wsi_pipeline.viewer.results import (
    load_result_folder,
    read_heatmap,
    read_lesions,
    read_summary,
    slide_path,
)
from wsi_pipeline.viewer.write import pyramid_scale


def _page_json(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


# --- data -------------------------------------------------------------------------------------
def test_viewer_data_is_frozen_and_checked():
    data = review_data()
    with pytest.raises(AttributeError):
        data.mpp = 1.0  # type: ignore[misc]
    assert not data.heatmap.flags.writeable and data.heatmap.dtype == np.float32
    with pytest.raises(ValueError, match="confidence"):
        Lesion([[(0, 0), (1, 0), (1, 1)]], 0.1, 0.1, 1.5, "x")
    with pytest.raises(ValueError, match="ring"):
        Lesion([[(0, 0), (1, 0)]], 0.1, 0.1, 0.5, "x")
    with pytest.raises(ValueError, match="mpp"):
        ViewerData("s", (10, 10), 0.0)
    with pytest.raises(ValueError, match="2-D"):
        ViewerData("s", (10, 10), 0.5, heatmap=np.zeros(3))
    assert data.lesions[0].bounds == (500.0, 400.0, 900.0, 800.0)


# --- pyramid ----------------------------------------------------------------------------------
def _striped_slide(path: Path, width: int = 1900, height: int = 1300) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 200, size=(height, width, 3), dtype=np.uint8)  # no blank tile anywhere
    return write_pyramidal_tiff(path, rgb, mpp=0.5, levels=2, compression="zlib"), rgb


def _tiles(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def test_pyramid_layout_matches_openslide_deepzoom(tmp_path):
    path, rgb = _striped_slide(tmp_path / "s.tif")
    with open_slide(path) as reader:
        pyramid = write_pyramid(reader, tmp_path / "t", 1.0, fmt="png")
    deepzoom = DeepZoomGenerator(openslide.OpenSlide(str(path)), 254, 1, limit_bounds=False)
    assert level_sizes(pyramid.width, pyramid.height) == list(deepzoom.level_dimensions)
    tiles = _tiles(tmp_path / "t")
    assert len(tiles) == pyramid.n_tiles == sum(c * r for c, r in deepzoom.level_tiles)
    for name, tile in tiles.items():
        level, col, row = (int(v) for v in re.findall(r"\d+", name))
        assert tile.shape[1::-1] == deepzoom.get_tile_dimensions(level, (col, row)), name
    # the top level is the slide itself (1 level-0 px per px, overlap 1)
    assert np.array_equal(tiles[f"{pyramid.max_level}/1_1.png"], rgb[253:509, 253:509])
    # each level below is the 2x2 mean of the one above
    assert np.array_equal(tiles[f"{pyramid.max_level - 1}/0_0.png"], halve(rgb)[:255, :255])


def test_pyramid_in_blocks_equals_one_pass(tmp_path):
    path, _ = _striped_slide(tmp_path / "s.tif", 901, 533)
    with open_slide(path) as reader:
        write_pyramid(reader, tmp_path / "one", 1.0, tile_size=32, fmt="png", block_levels=6)
        blocks = write_pyramid(reader, tmp_path / "blocks", 1.0, tile_size=32, fmt="png", block_levels=2)
    one, many = _tiles(tmp_path / "one"), _tiles(tmp_path / "blocks")
    assert blocks.width == 901 and len(one) == len(many) == blocks.n_tiles
    assert all(np.array_equal(one[name], many[name]) for name in one)


def test_pyramid_resamples_and_skips_blank_glass(tmp_path):
    slide = write_review_slide(tmp_path / "review.tif")
    with open_slide(slide) as reader:
        pyramid = write_pyramid(reader, tmp_path / "t", 0.972 / 0.5)
    assert (pyramid.width, pyramid.height) == (1544, 1029)  # ceil(3000 / 1.944), ceil(2000 / 1.944)
    top = pyramid.max_level
    bits = np.unpackbits(np.frombuffer(pyramid.blank[top], np.uint8), bitorder="little")[: 7 * 5]
    written = {p.name for p in (tmp_path / "t" / str(top)).iterdir()}
    assert bits.reshape(5, 7)[4, 0] == 1 and "0_4.jpeg" not in written  # glass below the tissue
    assert bits.reshape(5, 7)[2, 3] == 0 and "3_2.jpeg" in written  # tissue
    assert (
        pyramid.n_blank > 0
        and len(list((tmp_path / "t").rglob("*.jpeg"))) == pyramid.n_tiles - pyramid.n_blank
    )
    assert max(abs(c - 240) for c in pyramid.glass) <= 3
    # one tile shows the whole slide from level 8 down: bright and uniform-looking, but not glass
    assert all(not any(pyramid.blank[level]) for level in range(9))
    level9 = np.unpackbits(np.frombuffer(pyramid.blank[9], np.uint8), bitorder="little")[:4]
    assert level9.tolist() == [0, 0, 1, 1]  # 2 x 2 tiles; the lower two are 4 px of glass


# --- layers and page --------------------------------------------------------------------------
def test_heatmap_layer_is_transparent_below_threshold_and_placed_in_slide_pixels():
    data = review_data()
    rgba = heatmap_rgba(data.heatmap)
    assert rgba[0, 0, 3] == 0 and rgba[1, 1, 3] == 0  # NaN, 0.05
    assert rgba[3, 9, 3] == 255 and np.abs(rgba[3, 9, :3] - inferno(TUMOUR_PROB)).max() <= 1
    assert abs(int(heatmap_rgba(np.array([[0.2]], np.float32))[0, 0, 3]) - 255 * MIN_ALPHA) <= 1
    layer = heatmap_layer(data)
    assert (layer["x"], layer["y"], layer["width"], layer["height"]) == (*CELL_ORIGIN, 14 * CELL, 9 * CELL)
    import base64
    import io

    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(layer["url"].split(",", 1)[1]))))
    scale = png.shape[1] // 14
    assert png.shape == (9 * scale, 14 * scale, 4) and scale > 8
    assert np.array_equal(png[::scale, ::scale], rgba)


def test_lesion_entries_largest_first_with_svg_paths():
    entries = lesion_entries(review_data())
    assert [e["name"] for e in entries] == ["Tumor region 1", "small"]
    assert entries[0]["bounds"] == [1700.0, 500.0, 2300.0, 1100.0]
    assert entries[1]["path"].count("M") == 2  # outer ring and hole
    assert entries[0]["confidence"] == 0.93


def test_page_inlines_everything_and_escapes_data():
    data = review_data(name="a</script><b>.svs")
    html = render_page(data, TileSource.glass_only(SIZE))
    assert html.count("</script>") == 3  # the data, OpenSeadragon and the viewer script
    assert "<b>" not in html.split("<body>")[1].split("<script")[0]
    payload = _page_json(html)
    assert payload["slide"]["name"] == "a</script><b>.svs" and payload["notes"] == [
        ["model", "test </script> model"]
    ]
    assert payload["tiles"]["url"] is None and payload["heatmap"]["minProb"] == 0.2
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert "Redistribution and use in source and binary forms" in html  # the BSD licence travels along


def test_write_viewer_files_and_size(tmp_path):
    slide = write_review_slide(tmp_path / "review.tif")
    with open_slide(slide) as reader:
        written = write_viewer(tmp_path / "out", review_data(), reader)
    assert [p.name for p in written] == ["viewer.html", "viewer_files", "viewer.dzi"]
    payload = _page_json((tmp_path / "out" / "viewer.html").read_text())
    assert payload["tiles"]["url"] == "viewer_files/" and payload["tiles"]["maxLevel"] == 11
    assert payload["tiles"]["level0Px"] == 2.0  # the slide's 1 um/px level, within 5 % of 0.972
    assert 'Width="1500" Height="1000"' in (tmp_path / "out" / "viewer.dzi").read_text()
    with open_slide(slide) as reader:
        assert [pyramid_scale(reader, wanted) for wanted in (1.944, 1.5, 0.5)] == [2.0, 1.5, 1.0]
    no_slide = write_viewer(tmp_path / "bare", review_data(), None)
    assert [p.name for p in no_slide] == ["viewer.html"]
    with open_slide(slide) as reader, pytest.raises(ValueError, match="px"):
        write_viewer(tmp_path / "x", ViewerData("s", (10, 10), 0.5), reader)


# --- results folder ---------------------------------------------------------------------------
def _results_folder(root: Path, slide: Path) -> Path:
    """A results folder in wsi-infer's layout, written with the package's own writers."""
    from wsi_pipeline.outputs.heatmap_zarr import write_heatmap_zarr

    folder = root / "review"
    folder.mkdir(parents=True)
    data = review_data()
    summary = {"slide": str(slide), "slide_name": slide.name, "mpp": 0.5, "slide_score": 0.93,
               "category": "micrometastasis", "largest_tumor_region_mm": 0.424,
               "n_tiles_tissue": 84}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    attrs = {"cell_origin_level0": list(CELL_ORIGIN), "cell_size_level0_px": CELL, "mpp": 0.5}
    write_heatmap_zarr(folder / "heatmap.zarr", data.heatmap, attrs)
    features = [
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[[list(p) for p in ring]
         for ring in lesion.rings]]}, "properties": {"name": lesion.name, "measurements": {
            "area_mm2": lesion.area_mm2, "max_diameter_mm": lesion.max_diameter_mm,
            "mean_prob_tumor": lesion.confidence}}}
        for lesion in data.lesions
    ]  # fmt: skip
    (folder / "tumor.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return folder


def test_results_folder_round_trip(tmp_path):
    slide = write_review_slide(tmp_path / "review.tif")
    folder = _results_folder(tmp_path, slide)
    assert slide_path(read_summary(folder), folder) == slide
    heatmap, origin, cell = read_heatmap(folder / "heatmap.zarr")
    assert origin == CELL_ORIGIN and cell == CELL
    np.testing.assert_array_equal(heatmap, review_data().heatmap)
    lesions = read_lesions(folder / "tumor.geojson")
    assert [(lesion.name, lesion.category, len(lesion.rings)) for lesion in lesions] == [
        ("small", "micrometastasis", 2), ("Tumor region 1", "micrometastasis", 1)]  # fmt: skip
    data = load_result_folder(folder, SIZE)
    assert (
        data.call == "micrometastasis (0.42 mm)"
        and data.score == 0.93
        and ("analysed tiles", "84") in data.notes
    )


def _view_error(monkeypatch, capsys, args: list[str]) -> str:
    from cli_helpers import run_wsi_pipeline

    assert run_wsi_pipeline(monkeypatch, ["view", *args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_view_errors_are_one_line(tmp_path, monkeypatch, capsys):
    def error(args: list[str]) -> str:
        return _view_error(monkeypatch, capsys, args)

    assert "no such results folder" in error([str(tmp_path / "missing")])
    assert "summary.json is missing" in error([str(tmp_path)])
    slide = write_review_slide(tmp_path / "review.tif")
    folder = _results_folder(tmp_path, slide)
    slide.rename(tmp_path / "elsewhere.tif")
    line = error([str(folder), "--port", "0"])
    assert "slide not found" in line and str(slide) in line


def test_view_of_a_tifffile_only_slide_points_to_viewer_html(tmp_path, monkeypatch, capsys, shared_data):
    from cli_helpers import run_wsi_pipeline

    def error(args: list[str]) -> str:
        return _view_error(monkeypatch, capsys, args)

    folder = _results_folder(tmp_path, write_review_slide(tmp_path / "review.tif"))
    # a slide only tifffile reads cannot be served at full resolution; --write makes viewer.html
    ome = tmp_path / "os1_detail.ome.tif"
    shutil.copy(shared_data / "slides" / "os1_detail.ome.tif", ome)
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "slide": str(ome), "mpp": 0.227}))
    (folder / "heatmap.zarr").rename(tmp_path / "unused.zarr")  # heatmap of another slide
    (folder / "tumor.geojson").unlink()
    line = error([str(folder), "--port", "0"])
    assert "OpenSlide cannot open an OME-TIFF" in line and "wsi-pipeline view --write" in line
    assert run_wsi_pipeline(monkeypatch, ["view", "--write", str(folder)]) == 0
    assert (folder / "viewer.html").is_file() and (folder / "viewer_files").is_dir()
    assert "open " + str(folder / "viewer.html") in error([str(folder), "--port", "0"])
    assert page_data(review_data(), TileSource.glass_only(SIZE))["mode"] == "file"
