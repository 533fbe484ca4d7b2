"""Model ensembles: mean of the members' logits, saved and loaded like any model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_wsi_pipeline
from model_helpers import save_small_bn_model

from wsi_pipeline.errors import ModelError
from wsi_pipeline.inference import inference_module
from wsi_pipeline.models import load_model, save_model
from wsi_pipeline.models.ensemble import combine_models


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p) - np.log1p(-p)


def _patches(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)


def test_ensemble_probability_is_sigmoid_of_mean_member_logit(tmp_path: Path) -> None:
    a = save_small_bn_model(tmp_path / "a", seed=1)
    b = save_small_bn_model(tmp_path / "b", seed=2)
    module, config = combine_models([a, b], name="pair")
    folder = save_model(tmp_path / "pair", module, config)
    pair = load_model(folder)
    assert pair.config.architecture == "ensemble" and pair.config.name == "pair"
    assert [m["architecture"] for m in pair.config.arch_kwargs["members"]] == ["tiny_resnet"] * 2
    assert len(pair.config.training["ensemble_of"]) == 2
    x = _patches()
    pa, pb, pp = (load_model(a).predict_proba(x), load_model(b).predict_proba(x), pair.predict_proba(x))
    assert np.abs(pa - pb).max() > 0.05  # the members really differ
    expected = 1.0 / (1.0 + np.exp(-(_logit(pa) + _logit(pb)) / 2))
    np.testing.assert_allclose(pp, expected, atol=1e-5)
    # wsi-infer's BatchNorm folding traces through the members and keeps the values.
    with torch.inference_mode():
        batch = pair.preprocess(torch.as_tensor(x))
        np.testing.assert_allclose(
            inference_module(pair.module)(batch).numpy(), pair.module(batch).numpy(), atol=1e-4
        )


def test_ensemble_keeps_the_members_domain_statistics(tmp_path: Path) -> None:
    from wsi_pipeline.domain import domain_statistics
    from wsi_pipeline.models.config import ModelConfig

    a = save_small_bn_model(tmp_path / "a", seed=1)
    b = save_small_bn_model(tmp_path / "b", seed=2)
    assert combine_models([a, b])[1].domain is None
    stats = domain_statistics(_patches(40))
    for member in (a, b):
        config = ModelConfig.load(member)
        config.domain = stats
        config.save(member)
    module, config = combine_models([a, b])
    assert config.domain == stats
    assert load_model(save_model(tmp_path / "pair", module, config)).config.domain == stats


def test_members_that_read_patches_differently_are_refused(tmp_path: Path) -> None:
    a = save_small_bn_model(tmp_path / "a", seed=1)
    b = save_small_bn_model(tmp_path / "b", seed=2, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ModelError, match="mean .* must read patches the same way"):
        combine_models([a, b])
    with pytest.raises(ModelError, match="at least two"):
        combine_models([a])


def test_cli_ensemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    a = save_small_bn_model(tmp_path / "a", seed=1)
    b = save_small_bn_model(tmp_path / "b", seed=2)
    assert run_wsi_pipeline(monkeypatch, ["ensemble", str(a), str(b), "-o", str(tmp_path / "ens")]) == 0
    assert load_model(tmp_path / "ens").config.architecture == "ensemble"
    assert "2 members" in capsys.readouterr().out
    code = run_wsi_pipeline(
        monkeypatch, ["ensemble", str(a), str(tmp_path / "nope"), "-o", str(tmp_path / "bad")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and "nope" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_validation_indices_check_the_recorded_data() -> None:
    from wsi_pipeline.data import stratified_split
    from wsi_pipeline.errors import DatasetError
    from wsi_pipeline.evaluation.validation import validation_indices

    labels = np.array([0, 1] * 20)
    split = {"method": "stratified_split", "seed": 4, "val_fraction": 0.25, "n_val": 10}
    np.testing.assert_array_equal(
        validation_indices({"n": 40, "split": split}, labels), stratified_split(labels, 0.25, seed=4)[1]
    )
    with pytest.raises(DatasetError, match="40 patches but .* drawn from 41"):
        validation_indices({"n": 41, "split": split}, labels)
    with pytest.raises(ModelError, match="no stratified validation split"):
        validation_indices({"n": 40}, labels)


def test_ensemble_dense_map_is_mean_of_member_maps() -> None:
    from wsi_pipeline.models import create_model
    from wsi_pipeline.models.ensemble import MeanLogitEnsemble

    torch.manual_seed(0)
    members = [create_model("dense_cnn", widths=(8, 8, 8, 8, 8)).eval() for _ in range(2)]
    pair = MeanLogitEnsemble(members).eval()
    assert (pair.dense_tile, pair.dense_stride) == (members[0].dense_tile, members[0].dense_stride)
    x = torch.rand(1, 3, 96 + 16, 96 + 32)
    with torch.no_grad():
        maps = [m.dense(x) for m in members]
        dense = pair.dense(x)
    assert dense.shape == (1, 1, 2, 3) and (maps[0] - maps[1]).abs().max() > 1e-4
    torch.testing.assert_close(dense, (maps[0] + maps[1]) / 2)
    mixed = MeanLogitEnsemble([members[0], create_model("tiny_resnet", widths=(8, 8))])
    assert not hasattr(mixed, "dense_tile")
    with pytest.raises(AttributeError, match="TinyResNet has no dense"):
        mixed.dense(x)
