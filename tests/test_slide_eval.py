"""``wsi-pipeline calibrate`` and ``slide-eval`` end to end on a few tiny simulated slides.

Real components throughout: a class-folder patch dataset of PNG files, the probe model saved with
its recorded validation split, simulated pyramidal TIFFs, the pipeline on a Dask LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_wsi_pipeline
from PIL import Image

from wsi_pipeline.data import stratified_split
from wsi_pipeline.evaluation.rule_fit import OperatingPoint, fit_rule
from wsi_pipeline.evaluation.simulated import load_result
from wsi_pipeline.models import ModelConfig, load_model, save_model
from wsi_pipeline.models.calibration import DecisionRule
from wsi_pipeline.models.registry import create_model
from wsi_pipeline.testing.probe import PROBE_KWARGS

N_NORMAL, N_TUMOUR = 60, 40
SMALL = ["--grid", "28", "--negative", "2", "--itc", "0", "--micro", "1", "--macro", "1", "--workers", "1"]


def _patch_folder(root: Path) -> Path:
    """Blue-ish normal and pink tumour patches; one normal in six is pinkish (a probe false positive)."""
    rng = np.random.default_rng(0)
    for label, n in ((0, N_NORMAL), (1, N_TUMOUR)):
        (root / str(label)).mkdir(parents=True)
        for i in range(n):
            base = np.array((220, 40, 90) if label or i % 6 == 5 else (80, 60, 200), dtype=np.float64)
            pixels = np.clip(base + rng.normal(0, 12, (96, 96, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / str(label) / f"p{label}_{i:03d}.png")
    return root


def _probe_with_split(folder: Path, split: bool = True) -> Path:
    labels = np.r_[np.zeros(N_NORMAL), np.ones(N_TUMOUR)].astype(np.int64)
    _, val = stratified_split(labels, 0.5, seed=0)
    data = {"n": len(labels), "split": {"method": "stratified_split", "seed": 0, "val_fraction": 0.5}}
    data["split"]["n_val"] = len(val)
    config = ModelConfig(
        architecture="mean_intensity_probe",
        arch_kwargs=dict(PROBE_KWARGS),
        name="probe",
        data=data if split else {},
    )
    return save_model(folder, create_model(config.architecture, **config.arch_kwargs), config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slide-eval")
    return {"root": root, "data": _patch_folder(root / "patches"), "model": _probe_with_split(root / "probe")}


def test_calibrate_then_slide_eval(setup: dict[str, Path], monkeypatch, capsys) -> None:
    def _invoke(args: list[str]) -> tuple[int, str]:
        code = run_wsi_pipeline(monkeypatch, args)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    root, data, model = setup["root"], setup["data"], setup["model"]
    calibrated = root / "calibrated"
    args = ["calibrate", "--model", str(model), "--data", str(data), "-o", str(calibrated)]
    code, output = _invoke([*args, *SMALL, "--work", str(root / "work")])
    assert code == 0, output
    assert "temperature" in output and "rule low" in output
    config = json.loads((calibrated / "config.json").read_text())
    assert 0.05 <= config["calibration"]["temperature"] <= 20
    assert config["calibration"]["fitted_on"]["patches"] == "the model's validation split (50 patches)"
    rule = config["decision_rule"]
    assert rule["fitted_on"]["seed"] == 0 and rule["fitted_on"]["status"] == "met"
    assert (calibrated / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert "calibration" not in json.loads((model / "config.json").read_text())  # the source is untouched
    loaded = load_model(calibrated)
    assert loaded.config.rule == DecisionRule(
        **{k: rule[k] for k in ("high", "low", "support_mm2", "fitted_on")}
    )

    # the slides calibrate ran: the rule re-applied to their heatmaps reproduces the fit
    slides = sorted((root / "work" / "slides").glob("*.tif"))
    results = [load_result(s, root / "work" / "results") for s in slides]
    refit, report = fit_rule(results, OperatingPoint())
    assert refit.parameters() == loaded.config.rule.parameters() and report["metrics"]["n_negative"] == 2

    out = root / "eval"
    code, output = _invoke(
        ["slide-eval", "--model", str(calibrated), "--data", str(data), "-o", str(out), *SMALL]
    )
    assert code == 0, output
    assert "| negative slides called micro/macro |" in output
    report = json.loads((out / "slide_eval.json").read_text())
    assert report["setup"]["seed"] == 1 and report["n_slides"] == 4
    assert report["setup"]["decision_rule"]["sources"]["high"] == "model config"
    confusion = dict(zip(report["confusion"]["rows"], report["confusion"]["matrix"], strict=True))
    assert confusion["macro"] == [0, 0, 0, 1] and confusion["negative"][2:] == [0, 0]
    assert (
        report["tissue_recall"]["method"] == "mask" and report["tissue_recall"]["glass_cells_analysed"] == 0
    )
    for name in ("slide_eval.md", "froc.png", "scores.png", "roc.png"):
        assert (out / name).stat().st_size > 0
    for slide in report["slides"]:  # every summary agrees with itself: a call only above "high"
        summary = json.loads((out / "results" / Path(slide["slide"]).stem / "summary.json").read_text())
        high = summary["decision_rule"]["parameters"]["high"]
        assert (summary["category"] != "none") == (summary["slide_score"] >= high) == bool(summary["lesions"])
    rows = (out / "results" / "run_summary.csv").read_text().splitlines()
    assert rows[0].split(",")[3] == "category" and any(",macrometastasis," in row for row in rows[1:])


def test_a_model_without_a_recorded_split_is_refused(
    setup: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    model = _probe_with_split(tmp_path / "nosplit", split=False)
    args = ["--model", str(model), "--data", str(setup["data"])]
    assert run_wsi_pipeline(monkeypatch, ["slide-eval", *args, "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model config records no stratified validation split") and "\n" not in err
    assert "--all-patches" in err and not (tmp_path / "o" / "slides").exists()
    assert run_wsi_pipeline(monkeypatch, ["calibrate", *args]) == 1
    assert capsys.readouterr().err.strip() == "error: give either -o/--output NEW_FOLDER or --in-place"
