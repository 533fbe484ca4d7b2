"""run_slide end to end on synthetic slides with a known truth (every heatmap cell checked)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from wsi_pipeline.errors import NoTissueError, OptionError, SlideOpenError, SlideReadError, UnknownMppError
from wsi_pipeline.options import InferenceOptions, params_hash
from wsi_pipeline.outputs import OUTPUT_FILES, OUTPUT_NAMES, read_heatmap_zarr, read_summary
from wsi_pipeline.pipeline import run_slide
from wsi_pipeline.testing import (
    PROBE_KWARGS,
    build_patch_mosaic,
    load_probe_model,
    probe_probability,
    write_ome_tiff,
    write_pyramidal_tiff,
)

PATCH = 32  # probe model input, model px
MODEL_MPP = 1.0


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return load_probe_model(tmp_path_factory.mktemp("probe") / "probe", patch_size=PATCH, mpp=MODEL_MPP)


def _colour_mosaic(rows: int, cols: int, cell0: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Slide image of ``rows x cols`` uniform-colour squares of ``cell0`` level-0 px inside a white margin
    of 2 cells; returns the image and the boolean tissue layout (with margin)."""
    rng = np.random.default_rng(seed)
    tissue = np.zeros((rows + 4, cols + 4), dtype=bool)
    tissue[2:-2, 2:-2] = True
    tissue[2, 2] = False  # a hole-free notch of glass at a corner
    image = np.full((tissue.shape[0] * cell0, tissue.shape[1] * cell0, 3), 255, dtype=np.uint8)
    for r, c in np.argwhere(tissue):
        # saturated H&E-like colours: strong red or strong blue, dark enough to be tissue
        red = rng.integers(60, 230)
        blue = rng.integers(60, 230)
        green = rng.integers(20, 50)
        image[r * cell0 : (r + 1) * cell0, c * cell0 : (c + 1) * cell0] = (red, green, blue)
    return image, tissue


def _expected_from_level0(image: np.ndarray, x: float, y: float, size0: float) -> float:
    """The probe's value of a tile; pixels beyond the slide are white background."""
    x0, y0, s = int(round(x)), int(round(y)), int(round(size0))
    tile = np.full((s, s, 3), 255, np.uint8)
    part = image[y0 : y0 + s, x0 : x0 + s]
    tile[: part.shape[0], : part.shape[1]] = part
    return probe_probability(tile, **PROBE_KWARGS)


def _check_every_cell(result, image: np.ndarray, tol: float) -> np.ndarray:
    """Geometry check against the fp32 probe (runs pass precision="fp32": bf16, which ``auto`` may
    choose, differs by up to 0.01 and is tested in test_inference_precision.py)."""
    heatmap, attrs = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    ox, oy = attrs["origin_level0"]
    stride0, tile0 = attrs["stride_level0_px"], attrs["tile_size_level0_px"]
    finite = np.argwhere(np.isfinite(heatmap))
    assert len(finite) == result.summary.n_tiles_tissue > 0
    errors = []
    for r, c in finite:
        expected = _expected_from_level0(image, ox + c * stride0, oy + r * stride0, tile0)
        errors.append(abs(float(heatmap[r, c]) - expected))
    assert max(errors) <= tol, f"worst cell error {max(errors):.4f}"
    return heatmap


@pytest.mark.parametrize(
    ("writer", "slide_mpp", "stride", "expected_level", "tol"),
    [
        # 2 level-0 px per model px: level 1 (downsample 2) is read without resizing
        (write_pyramidal_tiff, 0.5, None, 1, 2e-3),
        # 2.5 level-0 px per model px: level 1 read, then resized by 1.25; overlapping tiles
        (write_ome_tiff, 0.4, 16, 1, 2e-2),
        # finer than the model and no matching level: level 0 resized by 1/0.7
        (write_pyramidal_tiff, 0.7, 24, 0, 2e-2),
    ],
)
def test_every_heatmap_cell_is_the_probe_of_its_tile(
    tmp_path, probe, writer, slide_mpp, stride, expected_level, tol
):
    scale = MODEL_MPP / slide_mpp
    cell0 = int(round(PATCH * scale))
    image, _ = _colour_mosaic(5, 6, cell0)
    slide = writer(tmp_path / "mosaic.tif", image, mpp=slide_mpp, levels=3, tile=128)
    options = InferenceOptions(stride=stride, batch_size=7, precision="fp32")
    result = run_slide(slide, tmp_path / "out", options, probe)
    assert result.summary.level == expected_level
    assert result.summary.mpp == pytest.approx(slide_mpp, rel=1e-3)
    heatmap = _check_every_cell(result, image, tol)
    rows, cols = heatmap.shape
    stride0 = (stride or PATCH) * scale
    inset = (cell0 - stride0) / 2  # cells whose footprint starts inside the slide
    assert (rows, cols) == (
        int(np.ceil((image.shape[0] - inset) / stride0 - 1e-9)),
        int(np.ceil((image.shape[1] - inset) / stride0 - 1e-9)),
    )


@pytest.mark.parametrize(
    ("writer", "compression", "tol"),
    [
        (write_pyramidal_tiff, "zlib", 2e-3),
        (write_pyramidal_tiff, "jpeg", 2e-2),
        (write_ome_tiff, "zlib", 2e-3),
    ],
)
def test_tiles_overhanging_the_edge_are_scored_with_white_padding(tmp_path, probe, writer, compression, tol):
    # tissue up to the right and bottom edges of a 300 x 230 px slide at 0.5 um/px: 64 px tiles, so the
    # last column shows 44 px of tissue and the last row 38 px; beyond the slide the tile is white
    rng = np.random.default_rng(5)
    image = np.empty((230, 300, 3), np.uint8)
    image[:] = (200, 40, 120)
    image[:, 150:] = (90, 30, 200)  # right half blue, so the padded value differs per side
    image = np.clip(image + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    slide = writer(tmp_path / "edge.tif", image, mpp=0.5, levels=2, tile=128, compression=compression)
    result = run_slide(slide, tmp_path / "out", InferenceOptions(batch_size=5, precision="fp32"), probe)
    heatmap = _check_every_cell(result, image, tol)
    assert heatmap.shape == (4, 5) and np.isfinite(heatmap).all()  # every tile, edge ones included
    corner = probe_probability(np.pad(image[192:, 256:], ((0, 26), (0, 20), (0, 0)), constant_values=255))
    assert float(heatmap[3, 4]) == pytest.approx(corner, abs=tol)
    assert abs(corner - probe_probability(image[192:, 256:])) > 0.05  # white padding, not a crop
    assert result.summary.n_tiles_tissue == 20


def test_tissue_cells_and_nan_follow_the_layout(tmp_path, probe):
    image, tissue = _colour_mosaic(4, 5, 64, seed=3)
    slide = write_pyramidal_tiff(tmp_path / "s.tif", image, mpp=0.5, levels=2)
    result = run_slide(slide, tmp_path / "out", InferenceOptions(), probe)
    heatmap, _ = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    assert heatmap.shape == tissue.shape
    np.testing.assert_array_equal(np.isfinite(heatmap), tissue)
    s = result.summary
    assert s.n_tiles_total == tissue.size and s.n_tiles_tissue == tissue.sum()


#: The lesion rule with a support of one cell: a region is kept when its top cell reaches 0.9.
ONE_CELL_RULE = InferenceOptions(tumor_threshold=0.5, lesion_support_mm2=0.0)


def _tumour_block_slide(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Pale-blue (low probe score) tissue with a 3 x 4 block of red (high score) cells."""
    cell0 = 64  # slide mpp 0.5, model 1.0 um/px, 32 px tiles
    layout = np.zeros((8, 10), dtype=np.int8)  # 0 glass, 1 normal, 2 tumour
    layout[1:7, 1:9] = 1
    layout[2:5, 3:7] = 2
    colours = {0: (255, 255, 255), 1: (80, 60, 200), 2: (220, 40, 90)}
    image = np.zeros((8 * cell0, 10 * cell0, 3), dtype=np.uint8)
    for (r, c), v in np.ndenumerate(layout):
        image[r * cell0 : (r + 1) * cell0, c * cell0 : (c + 1) * cell0] = colours[int(v)]
    return write_pyramidal_tiff(tmp_path / "tumour_block.tif", image, mpp=0.5, levels=2), layout


def test_outputs_describe_the_tumour_region(tmp_path, probe):
    slide, layout = _tumour_block_slide(tmp_path)
    result = run_slide(slide, tmp_path / "out", ONE_CELL_RULE, probe)
    out = result.out_dir
    assert out == tmp_path / "out" / "tumour_block"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tumour_block"]

    s = json.loads((out / "summary.json").read_text())
    p_tumour = probe_probability(np.full((2, 2, 3), (220, 40, 90), np.uint8), **PROBE_KWARGS)
    p_normal = probe_probability(np.full((2, 2, 3), (80, 60, 200), np.uint8), **PROBE_KWARGS)
    assert p_tumour > 0.9 > 0.1 > p_normal
    assert s["slide_score"] == pytest.approx(p_tumour, abs=1e-3)  # k = 1: the top cell's probability
    cell_mm = 64 * 0.5 / 1000
    assert s["tumor_area_mm2"] == pytest.approx(12 * cell_mm**2, rel=1e-3)
    assert s["largest_tumor_region_mm"] == pytest.approx(5 * cell_mm, rel=1e-3)  # 3x4 cells: diagonal 5
    assert s["category"] == "isolated tumour cells"  # 0.16 mm < 0.2 mm
    assert s["n_tumor_regions"] == 1
    assert s["n_tiles_total"] == 80 and s["n_tiles_tissue"] == 48
    assert s["mpp"] == pytest.approx(0.5) and s["level"] == 1
    assert s["model"]["architecture"] == "mean_intensity_probe"
    assert s["model"]["weights_sha256"] == probe.weights_sha256
    assert s["params_hash"] == params_hash(probe, ONE_CELL_RULE)
    assert list(s)[0] == "diagnosis" and s["diagnosis"]["call"] == "suspected isolated tumour cells"
    assert s["diagnosis"]["largest_lesion_mm"] == 0.16 and s["diagnosis"]["n_lesions"] == 1
    assert s["decision_rule"]["parameters"] == {"high": 0.9, "low": 0.5, "support_mm2": 0.0}
    assert s["decision_rule"]["sources"] == {"high": "built-in default", "low": "CLI", "support_mm2": "CLI"}
    assert s["decision_rule"]["calibration"] == {"temperature": 1.0, "source": "built-in default"}
    assert s["lesions"][0]["confidence"] == pytest.approx(p_tumour, abs=1e-3) and s["warnings"] == []
    assert set(s["timings"]) >= {"read_s", "infer_s", "total_s"}
    assert s["software"]["wsi_pipeline"] and s["slide"] == str(slide.resolve())

    heatmap, attrs = read_heatmap_zarr(out / "heatmap.zarr")
    assert heatmap.dtype == np.float32
    assert attrs["cell_size_um"] == pytest.approx(32.0) and attrs["cell_size_level0_px"] == pytest.approx(
        64.0
    )
    assert attrs["tile_size_model_px"] == 32 and attrs["tile_size_level0_px"] == pytest.approx(64.0)
    assert attrs["stride_model_px"] == 32 and attrs["origin_level0"] == [0.0, 0.0]
    assert attrs["model_weights_sha256"] == probe.weights_sha256 and attrs["mpp"] == pytest.approx(0.5)
    assert attrs["slide_size"] == [640, 512] and attrs["model_name"] == "probe"
    np.testing.assert_array_equal(heatmap >= 0.5, layout == 2)

    with open(out / "tiles.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48
    hot = {(int(r["minx"]), int(r["miny"])) for r in rows if float(r["prob_tumor"]) >= 0.5}
    assert hot == {(c * 64, r * 64) for r, c in np.argwhere(layout == 2)}
    assert all(r["width"] == r["height"] == "64" for r in rows)

    geo = json.loads((out / "tumor.geojson").read_text())
    assert len(geo["features"]) == 1
    feature = geo["features"][0]
    assert feature["properties"]["classification"]["name"] == "Tumor"
    assert feature["properties"]["objectType"] == "annotation"
    assert shape(feature["geometry"]).equals(shapely.box(3 * 64, 2 * 64, 7 * 64, 5 * 64))


def test_the_default_rule_needs_more_support_than_a_small_block(tmp_path, probe):
    """The 3x4-cell block (0.012 mm2) is below the default support (0.026 mm2 = 25 cells of 32 um):
    no lesion, category none, and a score below the rule's high threshold."""
    slide, _ = _tumour_block_slide(tmp_path)
    s = run_slide(slide, tmp_path / "out", InferenceOptions(), probe).summary
    assert s.category == "none" and s.n_tumor_regions == 0 and s.lesions == ()
    p_tumour = probe_probability(np.full((2, 2, 3), (220, 40, 90), np.uint8), **PROBE_KWARGS)
    assert s.slide_score == pytest.approx(12 * p_tumour / 25, abs=1e-3)  # 12 cells of the 25 k counts
    assert s.slide_score < 0.9 and s.diagnosis()["call"] == "no metastasis suspected"
    assert s.decision_rule["support_cells"] == 25


def test_result_holds_in_memory_what_the_files_hold(tmp_path, probe):
    slide, _ = _tumour_block_slide(tmp_path)
    result = run_slide(slide, tmp_path / "out", ONE_CELL_RULE, probe)
    heatmap, _ = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    np.testing.assert_array_equal(result.heatmap, heatmap)
    assert read_summary(result.out_dir) == result.summary
    assert result.summary.outputs == OUTPUT_NAMES
    assert len(result.regions) == result.summary.n_tumor_regions == 1
    assert len(result.scores) == result.summary.n_tiles_tissue == 48
    cells = result.scores.cells
    np.testing.assert_array_equal(result.heatmap[cells[:, 0], cells[:, 1]], result.scores.probs)
    assert result.grid.shape == result.summary.grid.shape and result.thumbnail.shape[2] == 3
    timings = result.summary.timings
    assert timings.total_s >= timings.write_s > 0 and timings.infer_s == pytest.approx(
        result.scores.stats.infer_s, abs=1e-4
    )


def test_a_new_output_format_is_one_registry_entry(tmp_path, probe, monkeypatch):
    from wsi_pipeline import outputs

    def write_cell_count(folder: Path, result) -> None:
        (folder / "cells.txt").write_text(f"{len(result.scores)}\n")

    extra = outputs.OutputFormat("cells.txt", write_cell_count)
    monkeypatch.setattr(outputs, "OUTPUTS", (*outputs.OUTPUTS, extra))
    slide, _ = _tumour_block_slide(tmp_path)
    result = run_slide(slide, tmp_path / "out", InferenceOptions(), probe)
    assert (result.out_dir / "cells.txt").read_text() == "48\n"
    assert result.summary.outputs == (*OUTPUT_NAMES, "cells.txt")


def test_stride_smaller_than_tile_shifts_cell_footprints(tmp_path, probe):
    slide, layout = _tumour_block_slide(tmp_path)
    result = run_slide(slide, tmp_path / "out", InferenceOptions(stride=16, lesion_support_mm2=0.0), probe)
    _, attrs = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    assert attrs["cell_size_level0_px"] == pytest.approx(32.0)
    assert attrs["cell_origin_level0"] == [16.0, 16.0]  # 32-px squares centred on 64-px tiles
    geo = json.loads((result.out_dir / "tumor.geojson").read_text())
    union = shapely.union_all([shape(f["geometry"]) for f in geo["features"]])
    truth = shapely.box(3 * 64, 2 * 64, 7 * 64, 5 * 64)
    assert union.symmetric_difference(truth).area <= 0.35 * truth.area


def test_rerun_replaces_previous_result_only_at_the_end(tmp_path, probe):
    slide, _ = _tumour_block_slide(tmp_path)
    first = run_slide(slide, tmp_path / "out", InferenceOptions(), probe)
    marker = first.out_dir / "old-marker"
    marker.write_text("x")
    second = run_slide(slide, tmp_path / "out", InferenceOptions(tumor_threshold=0.9), probe)
    assert not marker.exists()
    assert json.loads((second.out_dir / "summary.json").read_text())["tumor_threshold"] == 0.9
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tumour_block"]


def test_params_hash_tracks_result_changing_options_only(probe, tmp_path):
    base = params_hash(probe, InferenceOptions())
    assert base == params_hash(probe, InferenceOptions(batch_size=3, num_readers=1, device="cpu"))
    for changed in (
        InferenceOptions(stride=16),
        InferenceOptions(mpp=0.5),
        InferenceOptions(tissue_threshold=0.5),
        InferenceOptions(tumor_threshold=0.7),
    ):
        assert params_hash(probe, changed) != base
    other = load_probe_model(tmp_path / "other", patch_size=PATCH, mpp=MODEL_MPP, bias=1.0)
    assert params_hash(other, InferenceOptions()) != base


# --- failures -----------------------------------------------------------------------------------
def _assert_nothing_left(out_root: Path) -> None:
    leftovers = list(out_root.iterdir()) if out_root.exists() else []
    assert leftovers == [], f"left behind: {leftovers}"


def test_blank_slide_is_no_tissue_error(tmp_path, probe):
    blank = write_pyramidal_tiff(tmp_path / "blank.tif", np.full((512, 512, 3), 250, np.uint8), mpp=0.5)
    with pytest.raises(NoTissueError, match=r"blank\.tif: no tissue"):
        run_slide(blank, tmp_path / "out", InferenceOptions(), probe)
    _assert_nothing_left(tmp_path / "out")


def test_missing_mpp_is_unknown_mpp_error_and_override_works(tmp_path, probe):
    image, _ = _colour_mosaic(3, 3, 64)
    slide = write_pyramidal_tiff(tmp_path / "nompp.tif", image, mpp=None, levels=2)
    with pytest.raises(UnknownMppError, match=r"nompp\.tif.*--mpp"):
        run_slide(slide, tmp_path / "out", InferenceOptions(), probe)
    _assert_nothing_left(tmp_path / "out")
    result = run_slide(slide, tmp_path / "out", InferenceOptions(mpp=0.5), probe)
    assert result.summary.mpp == 0.5 and result.summary.mpp_source == "option"


def test_not_a_slide_is_open_error(tmp_path, probe):
    bad = tmp_path / "notes.svs"
    bad.write_text("not a slide\n")
    with pytest.raises(SlideOpenError, match=r"notes\.svs"):
        run_slide(bad, tmp_path / "out", InferenceOptions(), probe)
    _assert_nothing_left(tmp_path / "out")


def test_read_error_mid_run_leaves_nothing_and_keeps_old_result(tmp_path, probe):
    """Zero some level-1 tiles of a valid slide: it opens, then fails while tiles are decoded."""
    slide, _ = _tumour_block_slide(tmp_path)
    run_slide(slide, tmp_path / "out", InferenceOptions(), probe)  # an older complete result
    old_summary = (tmp_path / "out" / "tumour_block" / "summary.json").read_text()
    import tifffile

    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[1]
        offsets, counts = list(page.dataoffsets), list(page.databytecounts)
    data = bytearray(slide.read_bytes())
    for off, n in zip(offsets, counts, strict=True):
        data[off : off + n] = bytes(n)
    slide.write_bytes(bytes(data))
    with pytest.raises(SlideReadError, match=r"tumour_block\.tif"):
        run_slide(slide, tmp_path / "out", InferenceOptions(num_readers=2), probe)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tumour_block"]
    assert (tmp_path / "out" / "tumour_block" / "summary.json").read_text() == old_summary


def test_bad_options_are_option_errors(tmp_path, probe):
    slide, _ = _tumour_block_slide(tmp_path)
    for options, flag in (
        ({"tumor_threshold": 1.5}, "--tumor-threshold"),
        ({"tissue_threshold": -0.1}, "--tissue-threshold"),
        ({"stride": 0}, "--stride"),
        ({"batch_size": 0}, "--batch-size"),
        ({"mpp": -1.0}, "--mpp"),
        ({"device": "tpu"}, "--device"),
    ):
        with pytest.raises(OptionError, match=flag):  # InferenceOptions checks itself when made
            run_slide(slide, tmp_path / "out", InferenceOptions(**options), probe)
    _assert_nothing_left(tmp_path / "out")


def test_unwritable_output_is_output_error(tmp_path, probe):
    from wsi_pipeline.errors import OutputError

    slide, _ = _tumour_block_slide(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot create output folder"):
        run_slide(slide, blocker, InferenceOptions(), probe)


def test_interrupted_write_leaves_no_finished_folder(tmp_path, probe, monkeypatch):
    from wsi_pipeline.outputs import overlay

    slide, _ = _tumour_block_slide(tmp_path)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(overlay, "write_overlay_png", explode)
    with pytest.raises(KeyboardInterrupt):
        run_slide(slide, tmp_path / "out", InferenceOptions(), probe)
    _assert_nothing_left(tmp_path / "out")


# --- the trained default model on real labelled patches ----------------------------------------
def test_default_model_scores_tumour_block_higher(tmp_path, shared_data):
    from wsi_pipeline.models.io import default_model_dir, load_model

    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("no trained default model shipped yet (wsi_pipeline/models/weights/default)")
    import csv as _csv

    from PIL import Image

    root = shared_data / "hcd_patches"
    with open(root / "train_labels.csv") as fh:
        labels = {row["id"]: int(row["label"]) for row in _csv.DictReader(fh)}
    ids = sorted(labels)
    tumour = [i for i in ids if labels[i] == 1][:24]
    normal = [i for i in ids if labels[i] == 0][:64]
    patches = [np.asarray(Image.open(root / "train" / f"{i}.jpg").convert("RGB")) for i in tumour + normal]
    patch_labels = [1] * len(tumour) + [0] * len(normal)
    layout = np.full((8, 10), -1, dtype=int)
    layout[0:8, 0:8] = np.arange(64).reshape(8, 8) + len(tumour)  # normal everywhere...
    layout[2:6, 2:8] = np.arange(24).reshape(4, 6)  # ...with a 4x6 tumour block
    image, truth = build_patch_mosaic(patches, patch_labels, layout)
    model = load_model(None)
    slide = write_pyramidal_tiff(tmp_path / "mosaic.tif", image, mpp=model.config.mpp, levels=2)
    # fp32: compared with predict_proba (fp32) below; auto may pick bf16 (within 0.01) on this CPU
    result = run_slide(slide, tmp_path / "out", InferenceOptions(precision="fp32"), model)
    heatmap, _ = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    assert heatmap.shape == truth.shape
    tumour_mean = np.nanmean(heatmap[truth == 1])
    normal_mean = np.nanmean(heatmap[truth == 0])
    assert tumour_mean > normal_mean, (tumour_mean, normal_mean)
    # slide at the model's um/px, lossless tiles: each cell is the model's output on its patch
    cells = np.argwhere(np.isfinite(heatmap))
    assert len(cells) >= 0.8 * (truth >= 0).sum() and (truth[cells[:, 0], cells[:, 1]] >= 0).all()
    tiles = np.stack([image[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] for r, c in cells])
    np.testing.assert_allclose(heatmap[cells[:, 0], cells[:, 1]], model.predict_proba(tiles), atol=1e-4)
