"""The review view in real headless Chromium: viewer.html from file://, and ``wsi-pipeline view``.

Checks are made on the page's DOM / OpenSeadragon state and on screenshot pixels of a slide with
known colours (tests/viewer_fixtures.py).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import Viewer, chromium_context, close_to, open_viewer
from viewer_fixtures import (
    GLASS,
    GREEN,
    GREEN_BOX,
    LESION2_HOLE,
    LESION2_OUTER,
    TISSUE,
    TUMOUR,
    TUMOUR_BOX,
    TUMOUR_PROB,
    centre,
    review_data,
    write_review_slide,
)

from wsi_pipeline.colormap import inferno
from wsi_pipeline.slide import open_slide
from wsi_pipeline.viewer import ViewerData, write_viewer

CYAN, YELLOW = (0, 229, 255), (255, 234, 0)  # outline colours (viewer.css)
TISSUE_ONLY = (1200, 1000)  # tissue with heatmap 0.05: no heatmap colour


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    with chromium_context(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def viewer_html(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("review")
    slide = write_review_slide(root / "review.tif")
    with open_slide(slide) as reader:
        return write_viewer(root / "out", review_data(), reader)[0]


@pytest.fixture
def viewer(context, viewer_html):
    loaded = open_viewer(context, viewer_html.as_uri())
    yield loaded
    loaded.page.close()


def test_file_viewer_renders_slide_tiles_and_lesion_list(viewer: Viewer):
    shot = viewer.screenshot()
    assert close_to(viewer.colour(shot, *TISSUE_ONLY), TISSUE, 12)
    assert close_to(viewer.colour(shot, *centre(GREEN_BOX)), GREEN, 12)
    assert close_to(viewer.colour(shot, 150, 1900), GLASS, 6)  # glass (a skipped blank tile)
    state = viewer.js(
        "({failed: wsiViewer.state.failedTiles, status: document.getElementById('status').hidden})"
    )
    assert state == {"failed": 0, "status": True}
    assert viewer.js("wsiViewer.drawnLevels().length") > 0
    entries = viewer.js("[...document.querySelectorAll('#lesion-list button')].map(b => b.innerText)")
    assert len(entries) == 2
    assert "micrometastasis" in entries[0] and "0.42 mm" in entries[0] and "confidence 93 %" in entries[0]
    assert "0.28 mm" in entries[1] and "confidence 60 %" in entries[1]
    assert viewer.js("document.getElementById('call').textContent").startswith("micrometastasis (0.42 mm)")
    assert viewer.errors == []


def test_heatmap_layer_colours_tumour_cells_and_toggles_off(viewer: Viewer):
    viewer.click("#toggle-heatmap")  # off
    off = viewer.screenshot()
    viewer.click("#toggle-heatmap")  # on
    on = viewer.screenshot()
    viewer.click("#toggle-heatmap")  # off again
    off_again = viewer.screenshot()
    tumour = centre(TUMOUR_BOX)
    assert close_to(viewer.colour(off, *tumour), TUMOUR, 12)
    opacity = viewer.js("Number(document.getElementById('heatmap-opacity').value) / 100")
    expected = opacity * inferno(TUMOUR_PROB) + (1 - opacity) * np.array(TUMOUR)
    assert close_to(viewer.colour(on, *tumour), expected, 12)
    # in slide coordinates: just inside the tumour cells coloured, just outside and below the
    # threshold (0.05) untouched
    for x, y, changed in ((1740, 800, True), (1660, 800, False), (*TISSUE_ONLY, False)):
        diff = np.abs(viewer.colour(on, x, y) - viewer.colour(off, x, y)).max()
        assert (diff > 30) if changed else (diff <= 2), (x, y, diff)
    assert np.abs(viewer.stage(off_again) - viewer.stage(off)).max() <= 2  # toggled off = as before
    assert viewer.errors == []


def test_lesion_outlines_are_drawn_in_place_and_toggle(viewer: Viewer):
    box = viewer.js("(() => { const r = document.querySelector('#lesion-layer path[data-lesion=\"0\"]')"
                    ".getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()")  # fmt: skip
    (x0, y0), (x1, y1) = viewer.screen_xy(*TUMOUR_BOX[:2]), viewer.screen_xy(*TUMOUR_BOX[2:])
    assert np.allclose(box, [x0, y0, x1, y1], atol=2.5)
    assert viewer.js("document.querySelectorAll('#lesion-layer path').length") == 2
    edge = (centre(TUMOUR_BOX)[0], TUMOUR_BOX[1])  # middle of the top edge
    shot = viewer.screenshot()
    assert close_to(viewer.colour(shot, *edge, radius=0), CYAN, 40)
    viewer.click("#toggle-outlines")
    hidden = viewer.screenshot()
    assert not close_to(viewer.colour(hidden, *edge, radius=0), CYAN, 80)
    viewer.click("#toggle-outlines")
    assert np.abs(viewer.stage(viewer.screenshot()) - viewer.stage(shot)).max() <= 2


def test_clicking_a_lesion_zooms_to_it(viewer: Viewer):
    zoom = viewer.js("wsiViewer.zoom()")
    viewer.click("#lesion-list button >> nth=1")  # the smaller lesion (list is largest first)
    assert viewer.js("wsiViewer.zoom()") > 2 * zoom
    cx, cy = centre(LESION2_OUTER)
    middle = viewer.js("wsiViewer.center()")
    assert abs(middle["x"] - cx) < 2 and abs(middle["y"] - cy) < 2
    assert viewer.js("[...document.querySelectorAll('.selected')].map(e => e.dataset.lesion)") == ["1", "1"]
    shot = viewer.screenshot()
    # centred on screen, the hole shows the tissue and the selected outline is yellow
    col, row = viewer.screen_xy(cx, cy)
    stage = viewer.js("(() => { const r = document.getElementById('osd').getBoundingClientRect();"
                      " return [r.left + r.width / 2, r.top + r.height / 2]; })()")  # fmt: skip
    assert abs(col - stage[0]) <= 2 and abs(row - stage[1]) <= 2
    assert close_to(viewer.colour(shot, *centre(LESION2_HOLE)), TISSUE, 12)
    assert close_to(viewer.colour(shot, cx, LESION2_OUTER[1], radius=0), YELLOW, 40)


def test_zoom_in_loads_finer_tiles(viewer: Viewer):
    viewer.page.set_viewport_size({"width": 520, "height": 500})  # a 220 px wide view: coarse tiles first
    viewer.settle()
    zoom, levels = viewer.js("wsiViewer.zoom()"), viewer.js("Math.max(...wsiViewer.drawnLevels())")
    assert levels < viewer.js("wsiViewer.data.tiles.maxLevel")
    scale = viewer.js("document.getElementById('scalebar-label').textContent")
    middle = (1400, 450)  # tissue (heatmap 0.05: transparent), above the navigator
    x, y = viewer.screen_xy(*middle)
    viewer.page.mouse.move(x, y)
    for _ in range(6):
        viewer.page.mouse.wheel(0, -200)
        viewer.page.wait_for_timeout(60)
    viewer.settle()
    assert viewer.js("wsiViewer.zoom()") > 2.5 * zoom
    assert viewer.js("Math.max(...wsiViewer.drawnLevels())") > levels
    assert viewer.js("document.getElementById('scalebar-label').textContent") != scale
    assert viewer.screen_xy(*middle) == pytest.approx((x, y), abs=2)  # zoomed about the mouse
    assert close_to(viewer.colour(viewer.screenshot(), *middle), TISSUE, 12)
    before = viewer.js("wsiViewer.zoom()")
    viewer.click("#zoom-in")
    assert viewer.js("wsiViewer.zoom()") == pytest.approx(2 * before, rel=1e-3)
    assert viewer.errors == []


def test_page_moved_without_its_tiles_says_so(context, viewer_html, tmp_path):
    moved = tmp_path / "viewer.html"
    shutil.copy(viewer_html, moved)
    page = context.new_page()
    page.goto(moved.as_uri())
    page.wait_for_function("!document.getElementById('status').hidden", timeout=10_000)
    assert "viewer_files" in page.inner_text("#status")
    assert page.eval_on_selector_all("#lesion-list button", "b => b.length") == 2  # the rest still works
    page.close()


def test_page_without_slide_heatmap_or_lesions(context, tmp_path):
    page_path = write_viewer(tmp_path, ViewerData("bare.svs", (4000, 3000), 0.25), None)[0]
    viewer = open_viewer(context, page_path.as_uri())
    assert viewer.js("document.getElementById('panel').innerText").count("No tumour regions found.") == 1
    assert viewer.js("document.getElementById('toggle-heatmap').disabled") is True
    assert close_to(viewer.colour(viewer.screenshot(), 2000, 1500), (240, 240, 240), 3)  # plain glass
    assert viewer.errors == []
    viewer.page.close()


# --- wsi-pipeline view on a real slide ---------------------------------------------------------
@pytest.fixture(scope="module")
def real_results(tmp_path_factory, shared_data) -> Path:
    """``wsi-infer`` output of a real H&E slide (the shipped model)."""
    out = tmp_path_factory.mktemp("results")
    slide = shared_data / "slides" / "cmu1_small_region.svs"
    code = "from wsi_pipeline.cli.infer import main; main()"
    done = subprocess.run([sys.executable, "-c", code, str(slide), "-o", str(out)], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out / "cmu1_small_region"


def test_view_command_serves_full_resolution_tiles(context, real_results):
    code = "from wsi_pipeline.cli.main import main; main()"
    server = subprocess.Popen([sys.executable, "-c", code, "view", str(real_results), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = server.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, server.poll() is not None and server.stderr.read())
        viewer = open_viewer(context, match.group(1))
        shot = viewer.screenshot()
        assert viewer.stage(shot).std() > 20  # tissue, not a blank page
        assert (
            viewer.js("wsiViewer.data.lesions.length") >= 1
            and viewer.js("wsiViewer.data.heatmap") is not None
        )
        viewer.js("wsiViewer.goToLesion(wsiViewer.data.lesions.length - 1)")  # the smallest lesion
        # then to 1:1 (one screen pixel per slide pixel) where it is: full-resolution tiles are needed
        viewer.js("(() => { const v = wsiViewer.viewer;"
                  " v.viewport.zoomTo(v.world.getItemAt(0).imageToViewportZoom(1)); })()")  # fmt: skip
        viewer.settle()
        max_level = viewer.js("wsiViewer.data.tiles.maxLevel")
        assert viewer.tiles and all(status == 200 for _, status in viewer.tiles), viewer.tiles
        assert any(
            f"/tiles/{max_level}/" in url for url, _ in viewer.tiles
        )  # full resolution, from the slide
        assert viewer.js("wsiViewer.state.failedTiles") == 0 and viewer.errors == []
        viewer.page.close()
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=10)
    assert server.returncode == 0 and "stopped" in out, err


def test_wsi_infer_writes_a_working_viewer_html(context, real_results):
    """wsi-infer's own viewer.html (on by default): slide tiles from viewer_files/, the heatmap, and
    the lesions of tumor.geojson, in the same level-0 place as the results files say."""
    import json

    assert (real_results / "viewer_files").is_dir() and (real_results / "viewer.dzi").is_file()
    regions = json.loads((real_results / "tumor.geojson").read_text())["features"]
    viewer = open_viewer(context, (real_results / "viewer.html").as_uri())
    try:
        shot = viewer.screenshot()
        assert viewer.stage(shot).std() > 20  # H&E tiles drawn, not a blank page
        assert viewer.js("wsiViewer.state.failedTiles") == 0 and viewer.errors == []
        assert viewer.js("wsiViewer.data.lesions.length") == len(regions) >= 1
        heatmap = viewer.js("wsiViewer.data.heatmap")
        summary = json.loads((real_results / "summary.json").read_text())
        cell = summary["heatmap"]["cell_size_level0_px"]
        assert heatmap["width"] == pytest.approx(summary["heatmap"]["shape"][1] * cell)
        assert [heatmap["x"], heatmap["y"]] == pytest.approx(summary["heatmap"]["cell_origin_level0"])
        assert viewer.js("document.getElementById('call').textContent").startswith(summary["category"])
    finally:
        viewer.page.close()
