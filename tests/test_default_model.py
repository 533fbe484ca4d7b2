"""The shipped default model: loads, is described by its config, and separates real patches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wsi_pipeline.models import create_model, default_model_dir, load_model
from wsi_pipeline.pcam import PCAM_MPP


def test_default_model_loads_with_its_config() -> None:
    model = load_model(None)
    cfg = model.config
    assert model.path == default_model_dir()
    assert cfg.architecture == "ensemble"
    members = cfg.arch_kwargs["members"]
    assert len(members) == 2 and {m["architecture"] for m in members} == {"context_cnn"}
    assert all(m["arch_kwargs"]["stem"] == "conv" for m in members)
    assert cfg.patch_size == 96 and cfg.center_crop is None
    assert cfg.mpp == pytest.approx(PCAM_MPP)
    assert cfg.class_names == ["normal", "tumor"]
    assert cfg.data["n"] == 9491 and cfg.data["split"]["seed"] == 0
    assert cfg.metrics["split"] == "validation"
    # Recorded validation figures (see MODEL_CARD.md); guards against shipping a broken model.
    assert cfg.metrics["auc"] > 0.975 and cfg.metrics["accuracy"] > 0.92 and cfg.metrics["n"] == 950
    assert cfg.metrics["auc_ci"][0] < cfg.metrics["auc"] < cfg.metrics["auc_ci"][1]
    # Calibration and lesion rule fitted by `wsi-pipeline calibrate` on its validation split only.
    assert cfg.calibration is not None and 0.5 < cfg.temperature < 3.0
    assert cfg.calibration.fitted_on["patches"].startswith("the model's validation split")
    assert cfg.decision_rule is not None and cfg.decision_rule.fitted_on["status"] == "met"
    assert cfg.decision_rule.fitted_on["patches"].startswith("the model's validation split")
    # Every member was trained on the same split, so the ensemble's validation figures are honest.
    trainings = [m["training"] for m in cfg.training["ensemble_of"]]
    assert [t["model"] for t in trainings] == ["context_cnn"] * 2
    assert [t["seed"] for t in trainings] == [0, 1]
    assert {t.get("split_seed") if t.get("split_seed") is not None else t["seed"] for t in trainings} == {0}
    assert len(model.weights_sha256) == 64
    size = sum(p.stat().st_size for p in default_model_dir().iterdir())
    assert size < 10 * 1024 * 1024
    assert (default_model_dir() / "MODEL_CARD.md").is_file()
    # The registry builds the same module that the weights fill (strict load succeeded above).
    fresh = create_model(cfg.architecture, **cfg.arch_kwargs)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.module.parameters())
    json.loads((default_model_dir() / "config.json").read_text())


def test_default_model_scores_real_tumour_patches_higher(shared_data) -> None:
    from wsi_pipeline.data import load_arrays, open_patch_dataset, stratified_sample

    path = shared_data / "hcd_patches"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    dataset = open_patch_dataset(path, check="none")
    idx = stratified_sample(dataset.labels, 64, seed=123)
    images, labels = load_arrays(dataset, idx)
    probs = load_model(None).predict_proba(images)
    assert probs.shape == (64,) and np.all((probs >= 0) & (probs <= 1))
    tumour, normal = probs[labels == 1], probs[labels == 0]
    assert tumour.mean() > normal.mean() + 0.3
    assert ((probs >= 0.5) == labels).mean() > 0.75


def test_shipped_models_are_found_by_name(tmp_path, monkeypatch) -> None:
    from wsi_pipeline.errors import ModelError
    from wsi_pipeline.models.io import model_folder, shipped_models

    assert "default" in shipped_models()
    monkeypatch.chdir(tmp_path)
    assert model_folder("default") == default_model_dir()  # no local folder of that name
    assert load_model("default").weights_sha256 == load_model(None).weights_sha256
    local = tmp_path / "default"
    local.mkdir()
    assert model_folder("default") == local.relative_to(tmp_path)  # a local path wins over a name
    with pytest.raises(ModelError, match=r"nope: model folder not found .*shipped models: default"):
        model_folder("nope")


def test_shipped_dense_model_is_described_by_its_config() -> None:
    """The second shipped model (`--model dense`): dense-capable, same split as the default, fitted
    calibration and lesion rule, recorded validation figures."""
    model = load_model("dense")
    cfg = model.config
    assert cfg.architecture == "dense_cnn" and hasattr(model.module, "dense")
    assert cfg.patch_size == 96 and cfg.center_crop is None and cfg.mpp == pytest.approx(PCAM_MPP)
    assert cfg.data["n"] == 9491 and cfg.data["split"]["seed"] == 0  # the default's split
    assert cfg.metrics["split"] == "validation" and cfg.metrics["n"] == 950 and cfg.metrics["auc"] > 0.95
    assert cfg.calibration is not None and cfg.decision_rule is not None
    assert cfg.decision_rule.fitted_on["status"] == "met"
    assert cfg.decision_rule.fitted_on["patches"].startswith("the model's validation split")
    assert sum(p.stat().st_size for p in model.path.iterdir()) < 10 * 1024 * 1024
    assert (model.path / "MODEL_CARD.md").is_file()
