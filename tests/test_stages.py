"""The typed hand-offs of the slide path: frozen, checked on construction, the summary round-trips."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.aggregation import SlideAggregate
from wsi_pipeline.devices import parse_device
from wsi_pipeline.errors import ModelConfigError, OptionError
from wsi_pipeline.inference import InferenceStats, TileScores
from wsi_pipeline.lesions import SCORE_METHOD
from wsi_pipeline.models import ModelConfig
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.slide import SlideInfo, check_mpp, describe_slide, open_slide
from wsi_pipeline.strict import build_dataclass
from wsi_pipeline.summary import SlideSummary
from wsi_pipeline.testing import sample_summary, write_pyramidal_tiff
from wsi_pipeline.tiling import TileGrid


def _info(**changes: object) -> SlideInfo:
    base = {
        "path": Path("s.tif"),
        "format": "test",
        "dimensions": (1000, 800),
        "level_downsamples": (1.0, 4.0),
        "mpp": 0.5,
        "mpp_source": "metadata",
    }
    return SlideInfo(**{**base, **changes})  # type: ignore[arg-type]


def test_slide_info_describes_an_open_slide_and_checks_itself(tmp_path: Path) -> None:
    path = write_pyramidal_tiff(tmp_path / "s.tif", np.full((300, 400, 3), 200, np.uint8), mpp=0.5, levels=2)
    with open_slide(path) as reader:
        info = describe_slide(reader)
        assert describe_slide(reader, 0.25).mpp_source == "option"
    assert (info.dimensions, info.level_count, info.mpp_source, info.name) == (
        (400, 300),
        2,
        "metadata",
        "s.tif",
    )
    assert (
        info.mpp == pytest.approx(0.5) and info.name == "s.tif" and info.resolved_path == str(path.resolve())
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.mpp = 1.0  # type: ignore[misc]
    (tmp_path / "link.tif").symlink_to(path)  # a link keeps its name; the recorded path is the file's
    with open_slide(tmp_path / "link.tif") as reader:
        linked = describe_slide(reader)
    assert (linked.name, linked.path, linked.shown_path) == (
        "link.tif",
        path.resolve(),
        tmp_path / "link.tif",
    )
    summary = sample_summary(slide_info=linked)
    assert SlideSummary.from_json(summary.to_json()) == summary
    with pytest.raises(OptionError, match="slide mpp must be a positive number"):
        _info(mpp=0.0)
    with pytest.raises(ValueError, match="mpp_source"):
        _info(mpp_source="guess")
    with pytest.raises(ValueError, match="dimensions"):
        _info(dimensions=(0, 800))


def test_mpp_is_checked_in_one_place() -> None:
    assert check_mpp(np.float32(0.25)) == pytest.approx(0.25)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "0.5", None):
        with pytest.raises(OptionError, match="--mpp must be a positive number"):
            check_mpp(bad)
    with pytest.raises(OptionError, match="--mpp must be a positive number"):
        InferenceOptions(mpp=-0.5)


def test_inference_options_are_frozen_and_checked_when_made() -> None:
    options = InferenceOptions(stride=32, device="cuda:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.stride = 16  # type: ignore[misc]
    assert options.to_dict()["stride"] == 32
    assert InferenceOptions(**options.to_dict()) == options
    for kwargs, flag in (
        ({"stride": 2.5}, "--stride must be a whole number"),
        ({"num_readers": 0}, "num_readers"),
        ({"device": "gpu"}, "--device"),
        ({"tumor_threshold": float("nan")}, "--tumor-threshold"),
    ):
        with pytest.raises(OptionError, match=flag):
            InferenceOptions(**kwargs)  # type: ignore[arg-type]


def test_device_syntax_is_one_parser() -> None:
    assert [parse_device(d) for d in ("auto", " CPU ", "cuda", "cuda:3")] == ["auto", "cpu", "cuda", "cuda:3"]
    for bad in ("", "cuda:", "cuda:-1", "cpu:0", "mps", None):
        with pytest.raises(
            OptionError, match=r"--device: unknown device .* \(use auto, cpu, cuda or cuda:N\)"
        ):
            parse_device(bad)  # type: ignore[arg-type]


def test_tile_grid_is_frozen_and_checked() -> None:
    grid = TileGrid(1000, 800, slide_mpp=0.5, stride=48, level=1, level_downsample=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.stride = 96  # type: ignore[misc]
    described = grid.describe()
    assert described.stride_model_px == 48 and described.level == 1 and described.level_downsample == 2.0
    assert described.shape == grid.shape and described.cell_size_um == pytest.approx(48 * 0.972)
    with pytest.raises(ValueError, match="level"):
        TileGrid(1000, 800, slide_mpp=0.5, level=-1)


def test_tile_scores_check_their_arrays() -> None:
    stats = InferenceStats()
    scores = TileScores(np.array([[0, 1], [2, 3]], np.int32), np.array([0.25, 0.75], np.float32), stats)
    assert scores.cells.dtype == np.int64 and len(scores) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        scores.probs = np.zeros(2, np.float32)  # type: ignore[misc]
    for cells, probs, match in (
        (np.zeros((2, 3), np.int64), np.zeros(2, np.float32), "cells"),
        (np.zeros((2, 2), np.float64), np.zeros(2, np.float32), "cells"),
        (np.zeros((2, 2), np.int64), np.zeros(3, np.float32), "probs"),
        (np.zeros((2, 2), np.int64), np.zeros(2, np.float64), "probs"),
        (np.array([[0, -1], [0, 0]]), np.zeros(2, np.float32), "non-negative"),
        (np.zeros((2, 2), np.int64), np.array([0.5, 1.5], np.float32), r"\[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=match):
            TileScores(cells, probs, stats)
    with pytest.raises(ValueError, match="precision"):
        InferenceStats(precision="int8")


def test_slide_aggregate_checks_itself() -> None:
    kwargs = {
        "slide_score": 0.5,
        "score_method": SCORE_METHOD,
        "n_tissue_cells": 4,
        "tumor_threshold": 0.5,
        "tumor_area_mm2": 0.0,
        "largest_tumor_region_mm": 0.0,
        "category": "none",
    }
    agg = SlideAggregate(**kwargs)  # type: ignore[arg-type]
    assert agg.regions == () and agg.n_tumor_regions == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        agg.slide_score = 1.0  # type: ignore[misc]
    for change, match in (
        ({"slide_score": 1.5}, "slide score"),
        ({"category": "big"}, "category"),
        ({"category": "micrometastasis"}, "kept region"),
    ):
        with pytest.raises(ValueError, match=match):
            SlideAggregate(**{**kwargs, **change})  # type: ignore[arg-type]


def test_summary_round_trips_through_json() -> None:
    summary = sample_summary()
    text = summary.to_json()
    back = SlideSummary.from_json(text)
    assert back == summary and back.to_json() == text
    assert (back.slide, back.slide_name, back.level) == ("/slides/sample.tif", "sample.tif", 1)
    data = json.loads(text)
    assert data["diagnosis"] == {
        "call": "suspected micrometastasis",
        "largest_lesion_mm": 0.26,
        "n_lesions": 1,
        "score": 0.75,
        "warnings": [],
        "note": "suggestion of an automated model, for review by a pathologist; not a diagnosis",
    }
    assert data["lesions"][0]["confidence"] == 0.93 and data["lesions"][0]["peak_cell"] == [3, 4]
    warned = sample_summary(warnings=("tissue unlike the training data",))
    assert SlideSummary.from_json(warned.to_json()).warnings == warned.warnings
    assert json.loads(warned.to_json())["diagnosis"]["warnings"] == ["tissue unlike the training data"]
    assert list(data)[:3] == ["diagnosis", "slide", "slide_name"] and list(data)[-2:] == [
        "outputs",
        "timings",
    ]
    assert data["tiles"]["stride_model_px"] == 96 and data["heatmap"]["shape"] == list(summary.grid.shape)
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.slide_score = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("params_hash"),  # missing field
        lambda d: d.update(extra=1),  # a field this version does not write
        lambda d: d["tissue"].update(n_tiles_tissue=3),  # sections that disagree
        lambda d: d["options"].update(stride=0),  # a bad value
        lambda d: d.update(slide_score="high"),  # a wrong type
        lambda d: d.update(params_hash="abc"),  # not a digest
    ],
)
def test_summary_json_that_is_not_a_complete_summary_is_refused(edit) -> None:
    data = json.loads(sample_summary().to_json())
    edit(data)
    with pytest.raises(ValueError, match="not a complete slide summary"):
        SlideSummary.from_json(json.dumps(data))
    with pytest.raises(ValueError, match="not a complete slide summary"):
        SlideSummary.from_json("[1, 2]")


def test_summary_checks_itself() -> None:
    with pytest.raises(ValueError, match="tissue tiles"):
        sample_summary(n_tiles_tissue=10_000)
    with pytest.raises(ValueError, match="params_hash"):
        sample_summary(params_hash="h1")
    with pytest.raises(ValueError, match="lesion records"):
        sample_summary(lesions=())


@dataclasses.dataclass(frozen=True)
class _Settings:
    name: str
    size: int = 3

    def __post_init__(self) -> None:
        if self.size < 0:
            raise OptionError("settings: size must be >= 0")


def test_strict_loader_names_the_source() -> None:
    assert build_dataclass(_Settings, {"name": "a"}, "x.yaml") == _Settings("a")
    for data, match in (
        ({"name": "a", "colour": 1}, r"x\.yaml: unknown setting\(s\) \['colour'\]; known: name, size"),
        ({"size": 1}, r"x\.yaml: missing setting\(s\) \['name'\]"),
        ({"name": "a", "size": -1}, r"x\.yaml: size must be >= 0"),
        ([1], r"x\.yaml: expected a mapping"),
    ):
        with pytest.raises(OptionError, match=match):
            build_dataclass(_Settings, data, "x.yaml", strip_prefix="settings: ")
    with pytest.raises(ModelConfigError, match=r"m/config\.json: unknown setting\(s\) \['colour'\]"):
        ModelConfig.from_dict({"architecture": "seed_cnn", "colour": 1}, source="m/config.json")


def test_top_level_exports_are_lazy() -> None:
    code = (
        "import sys, wsi_pipeline as w; assert 'torch' not in sys.modules, 'eager import';"
        "from wsi_pipeline import InferenceOptions, load_model, open_slide, run_slide;"
        "import wsi_pipeline.pipeline as p; assert run_slide is p.run_slide; print(sorted(w.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(
        sorted(["InferenceOptions", "__version__", "load_model", "open_slide", "run_slide"])
    )
