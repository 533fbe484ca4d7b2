"""The slide pipeline on the real slides in ../shared/data/slides (skipped when absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_pipeline.cli.infer import cli
from wsi_pipeline.errors import NoTissueError, SlideOpenError, SlideReadError, UnknownMppError
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outdir import LOCK_NAME
from wsi_pipeline.outputs import OUTPUT_FILES, read_heatmap_zarr
from wsi_pipeline.pcam import PCAM_MPP
from wsi_pipeline.pipeline import run_slide
from wsi_pipeline.testing import load_probe_model, save_probe_model

GOOD = [
    "cmu1_small_region.svs",
    "cmu1_small_pyramid_generic.tif",
    "cmu1_small_pyramid.ome.tif",
    "os1_detail.ome.tif",
]


@pytest.fixture(scope="module")
def slides_dir(shared_data) -> Path:
    return shared_data / "slides"


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    """The deterministic probe at the PCam geometry (96 px at 0.972 um/px): real tiles, fast model."""
    return save_probe_model(tmp_path_factory.mktemp("m") / "probe96", patch_size=96, mpp=PCAM_MPP)


@pytest.fixture(scope="module")
def probe(probe_dir):
    from wsi_pipeline.models import load_model

    return load_model(probe_dir)


@pytest.fixture(scope="module")
def good_results(slides_dir, probe, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    return {name: run_slide(slides_dir / name, out, InferenceOptions(), probe) for name in GOOD}


@pytest.mark.parametrize("name", GOOD)
def test_real_slide_produces_all_outputs(good_results, name):
    result = good_results[name]
    assert sorted(p.name for p in result.out_dir.iterdir()) == sorted(OUTPUT_FILES)
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert 0.0 <= summary["slide_score"] <= 1.0
    assert 0 < summary["n_tiles_tissue"] <= summary["n_tiles_total"]
    heatmap, attrs = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    assert np.isfinite(heatmap).sum() == summary["n_tiles_tissue"]
    assert attrs["slide_size"] == summary["slide_info"]["dimensions"]
    lines = (result.out_dir / "tiles.csv").read_text().splitlines()
    assert len(lines) == summary["n_tiles_tissue"] + 1


def test_same_pixels_in_three_containers_give_the_same_heatmap(good_results):
    maps = [read_heatmap_zarr(good_results[n].out_dir / "heatmap.zarr")[0] for n in GOOD[:3]]
    assert maps[0].shape == maps[1].shape == maps[2].shape
    both = np.isfinite(maps[0]) & np.isfinite(maps[1]) & np.isfinite(maps[2])
    assert both.sum() >= 0.9 * np.isfinite(maps[0]).sum()
    for other in maps[1:]:  # re-encoded JPEG tiles differ slightly, nothing more
        assert np.abs(maps[0][both] - other[both]).max() < 0.02


def test_format_fixture_generic_tiff_with_mpp(slides_dir, probe, tmp_path):
    """openslide-python's boxes.tiff records 352 um/px (a thumbnail-like value): refused, then --mpp."""
    fixture = slides_dir / "format_fixtures" / "openslide-python_boxes.tiff"
    with pytest.raises(UnknownMppError, match=r"boxes\.tiff.*implausibly coarse.*--mpp"):
        run_slide(fixture, tmp_path, InferenceOptions(), probe)
    try:
        result = run_slide(fixture, tmp_path, InferenceOptions(mpp=0.25), probe)
    except NoTissueError as exc:  # synthetic boxes may hold no tissue-like colour: a clear error then
        assert "boxes.tiff" in str(exc)
        assert list(tmp_path.iterdir()) == []
    else:
        assert sorted(p.name for p in result.out_dir.iterdir()) == sorted(OUTPUT_FILES)


@pytest.mark.parametrize(
    "name", ["openslide-python_small.svs", "openslide-python_boxes_0.dcm", "openslide-python_boxes_1.dcm"]
)
def test_format_fixtures_smaller_than_a_tile(slides_dir, probe, tmp_path, name):
    with pytest.raises(NoTissueError, match=rf"{name}.*smaller than one 96 px tile"):
        run_slide(slides_dir / "format_fixtures" / name, tmp_path, InferenceOptions(), probe)
    assert list(tmp_path.iterdir()) == []


def test_tcga_needs_mpp(slides_dir, probe_dir, tmp_path):
    tcga = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    result = CliRunner().invoke(
        cli, [str(tcga), "-o", str(tmp_path), "--model", str(probe_dir), "--no-progress"]
    )
    assert result.exit_code == 1
    error = result.stderr.strip()
    assert error.count("\n") == 0 and tcga.name in error and "--mpp" in error
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]
    ok = CliRunner().invoke(
        cli, [str(tcga), "-o", str(tmp_path), "--model", str(probe_dir), "--mpp", "0.5", "--no-progress"]
    )
    assert ok.exit_code == 0, ok.output
    summary = json.loads((tmp_path / tcga.stem / "summary.json").read_text())
    assert summary["mpp"] == 0.5 and summary["mpp_source"] == "option" and summary["n_tiles_tissue"] > 0


BROKEN = {
    "empty.svs": (SlideOpenError, "empty"),
    "not_a_slide.tif": (SlideOpenError, "not a slide"),
    "truncated_cmu1_small_region.svs": (SlideOpenError, "truncated"),
    "pathml_small_dicom_TCGA-XK-AAJU.dcm": (SlideOpenError, "image flavor"),
    "corrupt_tiles_cmu1_pyramid.tif": (SlideReadError, "corrupt_tiles_cmu1_pyramid"),
    "blank_no_tissue.tif": (NoTissueError, "no tissue"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_slide_raises_its_error(slides_dir, probe, tmp_path, name):
    error, text = BROKEN[name]
    with pytest.raises(error, match=text) as info:
        run_slide(slides_dir / "broken" / name, tmp_path, InferenceOptions(), probe)
    assert name in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_broken_folder_via_cli_one_line_each(slides_dir, probe_dir, tmp_path):
    result = CliRunner().invoke(
        cli, [str(slides_dir / "broken"), "-o", str(tmp_path), "--model", str(probe_dir), "--no-progress"]
    )
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(BROKEN), result.stderr
    for line, name in zip(errors, sorted(BROKEN), strict=True):
        assert line.startswith("error: ") and name in line
    # no slide folder at all, not even a temporary one; only the run summary that records the failures
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "run_summary.csv", "run_summary.json"]
    rows = list(csv.DictReader((tmp_path / "run_summary.csv").open()))
    assert sorted(row["status"] for row in rows) == ["failed"] * len(BROKEN)


def test_batch_of_good_and_bad_runs_the_good(slides_dir, probe_dir, tmp_path):
    args = [
        str(slides_dir / "broken" / "truncated_cmu1_small_region.svs"),
        str(slides_dir / "os1_detail.ome.tif"),
        str(slides_dir / "broken" / "corrupt_tiles_cmu1_pyramid.tif"),
        str(slides_dir / "tcga-cr-7395-01a-01-ts1.svs"),
        str(slides_dir / "cmu1_small_region.svs"),
    ]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path), "--model", str(probe_dir), "--no-progress"])
    assert result.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        LOCK_NAME,
        "cmu1_small_region",
        "os1_detail.ome",
        "run_summary.csv",
        "run_summary.json",
    ]
    assert len(result.stderr.strip().splitlines()) == 3
    assert "2 of 5 slide(s) done" in result.stdout


def test_probe_model_on_real_slide_matches_direct_tile_reads(slides_dir, probe, tmp_path):
    """Spot-check cells of a real slide against tiles read one by one through the slide API."""
    from wsi_pipeline.slide import open_slide, read_region_at_mpp
    from wsi_pipeline.testing import probe_probability

    slide = slides_dir / "cmu1_small_pyramid_generic.tif"
    result = run_slide(slide, tmp_path, InferenceOptions(stride=48, precision="fp32"), probe)
    heatmap, attrs = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    ox, oy = attrs["origin_level0"]
    s0, t0 = attrs["stride_level0_px"], attrs["tile_size_level0_px"]
    cells = np.argwhere(np.isfinite(heatmap))
    rng = np.random.default_rng(0)
    with open_slide(slide) as reader:
        for r, c in cells[rng.choice(len(cells), size=min(25, len(cells)), replace=False)]:
            tile = read_region_at_mpp(reader, ox + c * s0, oy + r * s0, t0, t0, 96, 96)
            assert heatmap[r, c] == pytest.approx(probe_probability(tile), abs=2e-3)


def test_probe_helper_loads(tmp_path):
    model = load_probe_model(tmp_path / "p", patch_size=96, mpp=PCAM_MPP)
    assert model.config.architecture == "mean_intensity_probe"
