"""Model export: TorchScript / ONNX files plus a wsinfer config.json that reproduce our probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_wsi_pipeline
from model_helpers import save_small_bn_model

from wsi_pipeline.errors import ModelError, OptionError, OutputError
from wsi_pipeline.export import export_model, wsinfer_config
from wsi_pipeline.models import load_model

MEAN = [0.70, 0.55, 0.70]
STD = [0.20, 0.25, 0.18]


def _save_small_model(folder: Path, center_crop: int | None = None, stain: dict | None = None) -> Path:
    return save_small_bn_model(folder, center_crop=center_crop, stain=stain, mean=MEAN, std=STD)


def _patches(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)


def _wsinfer_style_input(patches: np.ndarray, config: dict) -> np.ndarray:
    """What wsinfer feeds the model: ToTensor (/255, CHW) then Normalize, from the exported config."""
    names = [t["name"] for t in config["transform"]]
    assert names == ["Resize", "ToTensor", "Normalize"]
    norm = config["transform"][2]["arguments"]
    x = patches.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = np.asarray(norm["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(norm["std"], np.float32).reshape(1, 3, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def _softmax_tumour(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True))[:, 1]


@pytest.mark.parametrize("center_crop", [None, 48])
def test_torchscript_export_matches_our_probabilities(tmp_path: Path, center_crop: int | None) -> None:
    model_dir = _save_small_model(tmp_path / "model", center_crop=center_crop)
    result = export_model(model_dir, tmp_path / "export", "torchscript")
    assert result.model_path == tmp_path / "export" / "torchscript_model.pt"
    config = json.loads(result.config_path.read_text())

    ours = load_model(model_dir).predict_proba(_patches())
    assert ours.std() > 1e-3  # the check below would be vacuous on constant outputs
    scripted = torch.jit.load(str(result.model_path), map_location="cpu")
    with torch.no_grad():
        logits = scripted(torch.from_numpy(_wsinfer_style_input(_patches(), config))).numpy()
    assert logits.shape == (6, 2)
    np.testing.assert_allclose(logits[:, 0], 0.0)
    np.testing.assert_allclose(_softmax_tumour(logits), ours, atol=1e-5)
    # Dynamic batch size: a single patch works too.
    with torch.no_grad():
        one = scripted(torch.from_numpy(_wsinfer_style_input(_patches(1), config))).numpy()
    np.testing.assert_allclose(_softmax_tumour(one), ours[:1], atol=1e-5)
    # the export is frozen; its fast CPU form is one call after loading (an optimize_for_inference graph
    # holds oneDNN-packed constants that torch 2.x cannot save: "required keyword attribute 'value'")
    fast = torch.jit.optimize_for_inference(torch.jit.load(str(result.model_path), map_location="cpu"))
    with torch.no_grad():
        fast_logits = fast(torch.from_numpy(_wsinfer_style_input(_patches(), config))).numpy()
    np.testing.assert_allclose(_softmax_tumour(fast_logits), ours, atol=1e-5)


def test_wsinfer_config_fields(tmp_path: Path) -> None:
    model_dir = _save_small_model(tmp_path / "model")
    export_model(model_dir, tmp_path / "export", "torchscript")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["spec_version"] == "1.0"
    assert config["architecture"] == "tiny_resnet"
    assert config["num_classes"] == 2 == len(config["class_names"])
    assert config["class_names"] == ["normal", "tumor"]
    assert config["patch_size_pixels"] == 96
    assert config["spacing_um_px"] == pytest.approx(0.972)
    transform = {t["name"]: t.get("arguments") for t in config["transform"]}
    assert transform["Resize"] == {"size": [96, 96]}
    assert transform["Normalize"] == {"mean": MEAN, "std": STD}
    assert config["wsi_pipeline"]["weights_sha256"] == load_model(model_dir).weights_sha256


def test_onnx_export_matches_our_probabilities(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the optional 'onnx' extra")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    model_dir = _save_small_model(tmp_path / "model")
    result = export_model(model_dir, tmp_path / "export", "onnx")
    assert result.model_path.name == "model.onnx"
    config = json.loads(result.config_path.read_text())
    ours = load_model(model_dir).predict_proba(_patches(5))
    session = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": _wsinfer_style_input(_patches(5), config)})
    assert logits.shape == (5, 2)
    np.testing.assert_allclose(_softmax_tumour(logits), ours, atol=1e-5)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    model_dir = _save_small_model(tmp_path / "model")
    with pytest.raises(OptionError, match="unknown export format 'tflite'"):
        export_model(model_dir, tmp_path / "export", "tflite")
    assert not (tmp_path / "export").exists()


def test_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model folder not found"):
        export_model(tmp_path / "nope", tmp_path / "export", "torchscript")


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    model_dir = _save_small_model(tmp_path / "model")
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        export_model(model_dir, target, "torchscript")


def test_stain_normalised_model_is_refused(tmp_path: Path) -> None:
    model_dir = _save_small_model(tmp_path / "model", stain={"method": "macenko"})
    with pytest.raises(ModelError, match="stain normalisation"):
        export_model(model_dir, tmp_path / "export", "torchscript")


def test_wsinfer_config_accepts_loaded_model(tmp_path: Path) -> None:
    loaded = load_model(_save_small_model(tmp_path / "model"))
    assert wsinfer_config(loaded)["wsi_pipeline"]["name"] == "small-test"


def test_cli_export_writes_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    model_dir = _save_small_model(tmp_path / "model")
    out = tmp_path / "export"
    code = run_wsi_pipeline(
        monkeypatch, ["export", "--format", "torchscript", "--model", str(model_dir), "-o", str(out)]
    )
    assert code == 0
    assert (out / "torchscript_model.pt").is_file() and (out / "config.json").is_file()
    assert "torchscript_model.pt" in capsys.readouterr().out


def test_cli_missing_model_exits_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code = run_wsi_pipeline(
        monkeypatch, ["export", "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and "model folder not found" in err
    assert len(err.splitlines()) == 1


def test_cli_unknown_format_exits_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code = run_wsi_pipeline(monkeypatch, ["export", "--format", "tflite", "-o", str(tmp_path / "o")])
    assert code == 2
    assert "--format" in capsys.readouterr().err


def test_shipped_default_model_exports_faithfully(tmp_path: Path) -> None:
    from wsi_pipeline.models import default_model_dir

    if not (default_model_dir() / "model.safetensors").is_file():
        pytest.skip("the shipped default model is not in this checkout")
    result = export_model(None, tmp_path / "export", "torchscript")
    config = json.loads(result.config_path.read_text())
    patches = _patches(8, seed=4)
    ours = load_model(None).predict_proba(patches)
    scripted = torch.jit.load(str(result.model_path), map_location="cpu")
    with torch.no_grad():
        logits = scripted(torch.from_numpy(_wsinfer_style_input(patches, config))).numpy()
    np.testing.assert_allclose(_softmax_tumour(logits), ours, atol=1e-5)
