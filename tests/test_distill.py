"""Knowledge distillation (``distill_from``): targets blended with a real teacher's calibrated
probabilities, validation untouched, and a teacher that saw the validation patches refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_training import TINY, _cli, _write_dataset

from wsi_pipeline.errors import ModelError, OptionError
from wsi_pipeline.models import load_model
from wsi_pipeline.training.config import TrainConfig
from wsi_pipeline.training.data import prepare_data
from wsi_pipeline.training.distill import distill_targets
from wsi_pipeline.training.trainer import train

SPLIT = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("data") / "patches")


@pytest.fixture(scope="module")
def teacher(dataset: Path, tmp_path_factory) -> Path:
    cfg = TrainConfig.from_dict({**TINY, "epochs": 1, "split_seed": SPLIT})
    return train(dataset, cfg, tmp_path_factory.mktemp("teacher") / "run", progress=False).model_dir


def _data(dataset: Path, tmp_path: Path, split_seed: int):
    cfg = TrainConfig.from_dict({**TINY, "split_seed": split_seed})
    return prepare_data(dataset, cfg, cache_root=tmp_path / "cache", progress=False)


def test_targets_blend_labels_with_the_teacher_on_training_rows_only(
    dataset: Path, teacher: Path, tmp_path: Path
) -> None:
    data = _data(dataset, tmp_path, SPLIT)
    rows = np.random.default_rng(0).permutation(data.train_rows)  # any order
    targets = distill_targets(
        teacher, data.images, data.labels, rows, data.val_rows, 0.25, torch.device("cpu")
    )
    model = load_model(teacher)
    with torch.inference_mode():
        batch = torch.from_numpy(np.ascontiguousarray(data.images[rows]))
        p = model.probability(model.module(model.preprocess(batch)).reshape(-1)).numpy()
    np.testing.assert_allclose(targets[rows], 0.75 * data.labels[rows] + 0.25 * p, atol=1e-6)
    assert np.array_equal(targets[data.val_rows], data.labels[data.val_rows].astype(np.float32))
    assert not np.array_equal(targets[rows], data.labels[rows])  # the teacher is not a hard 0/1
    assert targets.min() >= 0 and targets.max() <= 1


def test_a_teacher_that_saw_validation_patches_is_refused(
    dataset: Path, teacher: Path, tmp_path: Path
) -> None:
    data = _data(
        dataset, tmp_path, SPLIT + 1
    )  # another split: some of its validation rows trained the teacher
    with pytest.raises(OptionError, match=r"trained on \d+ of this run's \d+ validation patches"):
        distill_targets(
            teacher, data.images, data.labels, data.train_rows, data.val_rows, 0.5, torch.device("cpu")
        )


def test_distillation_weight_zero_trains_like_no_distillation(
    dataset: Path, teacher: Path, tmp_path: Path
) -> None:
    base = {**TINY, "epochs": 1, "split_seed": SPLIT}
    plain = train(dataset, TrainConfig.from_dict(base), tmp_path / "plain", progress=False)
    zero = TrainConfig.from_dict({**base, "distill_from": str(teacher), "distill_weight": 0.0})
    half = TrainConfig.from_dict({**base, "distill_from": str(teacher), "distill_weight": 0.5})
    a = train(dataset, zero, tmp_path / "zero", progress=False)
    b = train(dataset, half, tmp_path / "half", progress=False)
    assert a.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], rel=1e-6)
    assert b.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"], rel=1e-3)
    assert load_model(b.model_dir).config.training["distill_from"] == str(teacher)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"distill_weight": 1.5}, OptionError, "distill_weight must be in"),
        ({"distill_from": ""}, OptionError, "distill_from must be"),
        ({"distill_from": 3}, OptionError, "distill_from must be"),
    ],
)
def test_bad_distillation_settings_are_rejected(settings: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig.from_dict({**TINY, **settings})


def test_a_missing_teacher_is_a_model_error(dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({**TINY, "epochs": 1, "distill_from": str(tmp_path / "nowhere")})
    with pytest.raises(ModelError):
        train(dataset, cfg, tmp_path / "run", progress=False)


def test_cli_distills_from_a_teacher_and_refuses_a_leaking_one(
    dataset: Path, teacher: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1, "split_seed": SPLIT}))
    base = ["--data", str(dataset), "--config", str(cfg), "--quiet", "--distill-from", str(teacher)]
    assert _cli([*base, "--distill-weight", "0.3", "-o", str(tmp_path / "ok")], monkeypatch) == 0
    assert load_model(tmp_path / "ok" / "model").config.training["distill_weight"] == 0.3
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1, "split_seed": SPLIT + 1}))
    capsys.readouterr()
    assert _cli([*base, "-o", str(tmp_path / "bad")], monkeypatch) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "validation patches" in err and "\n" not in err, err


def test_the_split_check_follows_a_config_json_path_and_warns_without_hashes(
    dataset: Path, teacher: Path, tmp_path: Path
) -> None:
    import shutil

    data = _data(dataset, tmp_path, SPLIT + 1)
    with pytest.raises(OptionError, match="validation patches"):  # config.json names the same folder
        distill_targets(
            teacher / "config.json", data.images, data.labels, data.train_rows, data.val_rows, 0.5,
            torch.device("cpu"),
        )  # fmt: skip
    bare = tmp_path / "bare"
    shutil.copytree(teacher, bare)
    (bare / "train_patches.u64").unlink()
    lines: list[str] = []
    cfg = TrainConfig.from_dict({**TINY, "epochs": 1, "distill_from": str(bare)})
    train(dataset, cfg, tmp_path / "run", progress=False, echo=lines.append)
    assert any(line.startswith("warning:") and "cannot be checked" in line for line in lines), lines
