"""The out-of-domain warning: patch features, training statistics in the model config, the check on
real slides (skin warned, simulated lymph node not) and its way into summary.json and wsi-infer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_pipeline.domain import FEATURES, DomainStats, check_domain, domain_statistics, patch_features
from wsi_pipeline.errors import ModelConfigError
from wsi_pipeline.models import load_model
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.slide import describe_slide, open_slide
from wsi_pipeline.stages import domain_warnings, select_tissue_cells
from wsi_pipeline.summary import SlideSummary
from wsi_pipeline.testing import sample_summary, save_probe_model, write_pyramidal_tiff
from wsi_pipeline.tiling import plan_grid
from wsi_pipeline.tissue import detect_tissue


def _textured(
    colour: tuple[int, int, int], n: int, seed: int, size: int = 32, noise: float = 12.0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.float64) + rng.normal(0, 8, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, noise, (n, size, size, 3)), 0, 255).astype(np.uint8)


def test_patch_features_of_a_flat_patch_are_its_stain_concentrations() -> None:
    from wsi_pipeline.hed import HED_FROM_RGB

    patch = np.zeros((1, 8, 8, 3), np.uint8)
    patch[:] = (180, 90, 150)
    features = dict(zip(FEATURES, patch_features(patch)[0], strict=True))
    hed = -np.log(np.array([180, 90, 150]) / 255.0) @ HED_FROM_RGB.numpy()
    assert [features["h_mean"], features["e_mean"], features["d_mean"]] == pytest.approx(hed, abs=1e-5)
    assert features["h_p90"] == pytest.approx(hed[0], abs=1e-5)
    assert [features["h_std"], features["e_std"], features["gradient"]] == pytest.approx([0, 0, 0], abs=1e-6)
    striped = patch.copy()
    striped[0, :, ::2] = 255  # white every other column: texture
    assert patch_features(striped)[0, FEATURES.index("gradient")] == pytest.approx(
        (255 - 140) / 255, abs=0.01
    )


def test_threshold_is_the_training_quantile_and_far_patches_exceed_it() -> None:
    train = _textured((200, 110, 170), 400, seed=0)
    stats = domain_statistics(train, quantile=0.9)
    assert stats.n_patches == 400 and stats.features == FEATURES
    assert np.mean(stats.distances(patch_features(train)) > stats.threshold) == pytest.approx(0.1, abs=0.005)
    near = check_domain(stats, _textured((200, 110, 170), 50, seed=1))
    far = check_domain(stats, _textured((90, 60, 200), 50, seed=2, noise=3.0))
    assert not near.out_of_domain and near.warning() is None
    assert far.out_of_domain and far.median_distance > 10 * far.threshold
    assert far.warning() is not None and "does not look like the model's training data" in far.warning()


def test_model_config_carries_the_typed_section(tmp_path: Path) -> None:
    stats = domain_statistics(_textured((200, 110, 170), 50, seed=0))
    config = ModelConfig(architecture="mean_intensity_probe", domain=stats)
    config.save(tmp_path)
    back = ModelConfig.load(tmp_path)
    assert isinstance(back.domain, DomainStats) and back.domain == stats
    assert ModelConfig(architecture="x").domain is None  # older models: no check
    data = json.loads((tmp_path / "config.json").read_text())
    data["domain"]["covariance"] = [[1.0]]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelConfigError, match="config.json: model config: domain statistics: mean and cov"):
        ModelConfig.load(tmp_path)
    data["domain"] = {"features": ["x"]}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelConfigError, match="domain statistics"):
        ModelConfig.load(tmp_path)


def test_summary_records_warnings_at_top_level() -> None:
    summary = sample_summary(warnings=("tissue does not look like the model's training data",))
    data = json.loads(summary.to_json())
    assert data["warnings"] == ["tissue does not look like the model's training data"]
    assert SlideSummary.from_json(summary.to_json()) == summary
    assert json.loads(sample_summary().to_json())["warnings"] == []


def _warnings_for(slide: Path, model, mpp: float | None = None) -> tuple[str, ...]:
    with open_slide(slide) as reader:
        info = describe_slide(reader, mpp)
        grid = plan_grid(info, model.config.patch_size, model.config.mpp)
        cells = select_tissue_cells(info, grid, detect_tissue(reader, info.mpp), 0.25)
        return domain_warnings(reader, grid, cells, model)


def test_default_model_warns_on_skin_not_on_simulated_lymph_node(shared_data: Path, tmp_path: Path) -> None:
    from wsi_pipeline.data import open_patch_dataset
    from wsi_pipeline.evaluation.validation import validation_indices
    from wsi_pipeline.simulate import SimulationSpec, build_slide_set

    model = load_model(None, device="cpu")
    assert model.config.domain is not None and model.config.domain.n_patches == 4000
    for name in ("cmu1_small_region.svs", "cmu1_small_pyramid_generic.tif", "cmu1_small_pyramid.ome.tif"):
        warnings = _warnings_for(shared_data / "slides" / name, model)
        assert len(warnings) == 1 and "does not look like the model's training data" in warnings[0], name
    dataset = open_patch_dataset(shared_data / "hcd_patches")
    val = validation_indices(model.config.data, np.asarray(dataset.labels))  # never in the statistics
    spec = SimulationSpec(grid=(32, 32), micro_mm=(0.3, 0.6), macro_mm=(2.1, 2.3))
    counts = {"negative": 1, "micro": 1, "macro": 1}
    for slide, _ in build_slide_set(dataset, val, tmp_path, counts=counts, seed=11, spec=spec):
        assert _warnings_for(slide, model) == (), slide.name


def test_wsi_infer_prints_one_warning_line_and_records_it(tmp_path: Path) -> None:
    from wsi_pipeline.cli.infer import cli

    model_dir = save_probe_model(tmp_path / "probe", patch_size=32, mpp=1.0)
    config = ModelConfig.load(model_dir)
    config.domain = domain_statistics(_textured((200, 110, 170), 300, seed=0))  # "trained" on pink
    config.save(model_dir)
    rng = np.random.default_rng(3)
    slides = {}
    for name, colour in (("pink", (200, 110, 170)), ("blue", (90, 60, 200))):
        image = np.full((512, 512, 3), 245, np.uint8)
        noise = (
            rng.normal(0, 12, (192, 192, 3)).repeat(2, axis=0).repeat(2, axis=1)
        )  # 1 um grain at 0.5 um/px
        image[64:448, 64:448] = np.clip(np.array(colour) + noise, 0, 255)
        slides[name] = write_pyramidal_tiff(tmp_path / f"{name}.tif", image, mpp=0.5, levels=2)
    out = tmp_path / "out"
    args = [
        str(slides["pink"]),
        str(slides["blue"]),
        "-o",
        str(out),
        "--model",
        str(model_dir),
        "--no-progress",
    ]
    lines = []
    for slide in ("pink", "blue"):  # one slide at a time: in this process
        result = CliRunner().invoke(cli, [str(slides[slide]), *args[2:]], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines += [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("warning: blue.tif: tissue does not look like")
    assert json.loads((out / "pink" / "summary.json").read_text())["warnings"] == []
    assert json.loads((out / "blue" / "summary.json").read_text())["warnings"] == [lines[0].split(": ", 2)[2]]
    # a batch (Dask workers) reports the same line, and run_summary.json records it; resumed slides too
    for run in ("fresh", "resumed"):
        folder = tmp_path / "batch"
        result = CliRunner().invoke(cli, [*args[:2], "-o", str(folder), *args[4:]], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == lines, run
        rows = json.loads((folder / "run_summary.json").read_text())["slides"]
        assert [row["warnings"] for row in rows] == [[], [lines[0].split(": ", 2)[2]]]
