"""Guards against silent failure from NaN/inf: models that output NaN, NaN weights, NaN predictions.

Real models throughout: a ``tiny_resnet`` with finite weights but a negative BatchNorm variance
(NaN out for every patch), and NaN weights written as a diverged run's ``model.safetensors``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import save_nan_output_model
from safetensors.torch import save_file
from test_cli_eval import make_dataset, save_probe

from wsi_pipeline.cli import evaluate as cli_eval
from wsi_pipeline.cli import infer as cli_infer
from wsi_pipeline.errors import ModelError, NonFiniteOutputError, WsiPipelineError
from wsi_pipeline.evaluation.report import compute_metrics
from wsi_pipeline.models import ModelConfig, create_model, load_model, save_model
from wsi_pipeline.models.config import WEIGHTS_FILENAME
from wsi_pipeline.pipeline import run_slide
from wsi_pipeline.testing import write_pyramidal_tiff


def _main(module, monkeypatch, capsys, prog: str, *args: str) -> tuple[int, str, str]:
    """The real console entry point (``run_cli``) in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [prog, *args])
    code = 0
    try:
        module.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _tissue_slide(path: Path) -> Path:
    image = np.full((320, 320, 3), 255, dtype=np.uint8)
    image[16:304, 16:304] = (200, 40, 120)  # 100 tissue tiles of 32 px at 1 um/px
    return write_pyramidal_tiff(path, image, mpp=1.0, levels=1)


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory) -> Path:
    return save_nan_output_model(tmp_path_factory.mktemp("m") / "nan_out", patch_size=32, mpp=1.0)


def test_nan_output_model_loads_but_outputs_nan(nan_model: Path) -> None:
    """The fixture is what it claims: finite weights (it loads), NaN probabilities."""
    model = load_model(nan_model)
    probs = model.predict_proba(np.full((3, 32, 32, 3), 128, np.uint8))
    assert np.isnan(probs).all()


def test_wsi_infer_stops_a_slide_whose_probabilities_are_nan(
    tmp_path: Path, nan_model: Path, monkeypatch, capsys
) -> None:
    slide = _tissue_slide(tmp_path / "case.tif")
    out = tmp_path / "out"
    args = (str(slide), "-o", str(out), "--model", str(nan_model), "--device", "cpu", "--no-progress")
    code, stdout, err = _main(cli_infer, monkeypatch, capsys, "wsi-infer", *args)
    assert code == 1, stdout
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {slide}: ") and "not finite" in lines[0]
    assert "100 of 100 tiles" in lines[0]
    assert "slide_score" not in stdout and "0 of 1 slide(s) done" in stdout
    assert not out.exists() or list(out.iterdir()) == []  # nothing finished-looking, no temp folder


def test_run_slide_raises_non_finite_output_error(tmp_path: Path, nan_model: Path) -> None:
    slide = _tissue_slide(tmp_path / "case.tif")
    with pytest.raises(NonFiniteOutputError, match=r"case\.tif: .*not finite"):
        run_slide(slide, tmp_path / "out", model=load_model(nan_model))
    assert issubclass(NonFiniteOutputError, ModelError)


def test_wsi_eval_refuses_nan_predictions(tmp_path: Path, monkeypatch, capsys) -> None:
    make_dataset(tmp_path / "data", n=12)
    nan_model = save_nan_output_model(tmp_path / "nan96", patch_size=96, mpp=0.972)
    args = ("--data", str(tmp_path / "data"), "--model", str(nan_model), "--device", "cpu")
    code, stdout, err = _main(cli_eval, monkeypatch, capsys, "wsi-eval", *args, "--bootstrap", "10")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not finite" in lines[0] and str(nan_model) in lines[0], err
    assert "accuracy" not in stdout and "AUC" not in stdout


def test_metrics_refuse_non_finite_probabilities() -> None:
    labels = np.array([0, 1, 0, 1])
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(NonFiniteOutputError, match="1 of 4"):
            compute_metrics(labels, np.array([0.1, 0.9, bad, 0.8]), n_boot=0)
    assert compute_metrics(labels, np.array([0.1, 0.9, 0.2, 0.8]), n_boot=0)["accuracy"] == 1.0


def test_save_model_refuses_non_finite_weights(tmp_path: Path) -> None:
    module = create_model("mean_intensity_probe")
    with torch.no_grad():
        module.linear.weight[0, 1] = float("nan")
    cfg = ModelConfig(architecture="mean_intensity_probe", name="diverged")
    with pytest.raises(ModelError, match=r"linear\.weight.*not finite"):
        save_model(tmp_path / "m", module, cfg)
    assert list(tmp_path.iterdir()) == []  # no model folder, no temp folder


def test_load_model_refuses_nan_weights_written_without_the_check(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A diverged run's weights saved by an older version (or another tool): refused on load, so
    ``wsi-infer`` fails up front with one line instead of reporting 'no tumour'."""
    folder = save_probe(tmp_path / "m")
    state = load_file_dict(folder / WEIGHTS_FILENAME)
    state["linear.bias"] = torch.tensor([float("nan")])
    save_file(state, str(folder / WEIGHTS_FILENAME))
    with pytest.raises(ModelError, match=r"linear\.bias.*not finite"):
        load_model(folder)
    slide = _tissue_slide(tmp_path / "case.tif")
    args = (str(slide), "-o", str(tmp_path / "out"), "--model", str(folder), "--device", "cpu")
    code, stdout, err = _main(cli_infer, monkeypatch, capsys, "wsi-infer", *args)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "not finite" in err
    assert not (tmp_path / "out" / "case").exists()


def load_file_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


def test_training_guard_names_the_non_finite_tensor() -> None:
    from wsi_pipeline.errors import TrainingDivergedError
    from wsi_pipeline.training.loop import check_finite

    module = create_model("tiny_resnet", widths=[4, 8], dropout=0.0)
    check_finite(module, "after epoch 1")
    bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean[0] = float("inf")  # a buffer, not a parameter: still caught
    with pytest.raises(TrainingDivergedError, match=r"running_mean is not finite after epoch 2"):
        check_finite(module, "after epoch 2")
    assert issubclass(TrainingDivergedError, WsiPipelineError)


def test_divergence_after_a_good_epoch_keeps_the_good_best_and_saves_no_model(
    tmp_path: Path, monkeypatch
) -> None:
    """Epoch 1 trains normally (its checkpoint becomes best.pt); a learning rate of 1e30 in epoch 2
    blows the weights up: the run stops, best.pt still holds epoch 1's finite weights, and neither
    ``model/`` nor ``last/`` is written."""
    from test_training import TINY, _write_dataset

    from wsi_pipeline.errors import TrainingDivergedError
    from wsi_pipeline.training import trainer
    from wsi_pipeline.training.config import TrainConfig
    from wsi_pipeline.training.schedules import lr_at

    def exploding(schedule, lr, epochs, epoch, *rest):  # type: ignore[no-untyped-def]
        return 1e30 if epoch >= 1 else lr_at(schedule, lr, epochs, epoch, *rest)

    monkeypatch.setattr(trainer, "lr_at", exploding)
    data = _write_dataset(tmp_path / "patches", n=24)
    run = tmp_path / "run"
    cfg = TrainConfig.from_dict({**TINY, "epochs": 3, "augment": False})
    with pytest.raises(TrainingDivergedError, match="epoch 2"):
        trainer.train(data, cfg, run, progress=False)
    best = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in best["model"].values() if t.is_floating_point())
    assert not (run / "model").exists() and not (run / "last").exists()
