"""``wsi-train`` end to end on a tiny synthetic Kaggle-layout dataset, resume, and bad inputs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_wsi_pipeline
from PIL import Image

from wsi_pipeline.cli.train import main as train_main
from wsi_pipeline.errors import OptionError, OutputError, UnknownArchitectureError
from wsi_pipeline.models import LoadedModel, load_model
from wsi_pipeline.training.config import TrainConfig
from wsi_pipeline.training.schedules import lr_at
from wsi_pipeline.training.trainer import train

TINY = {
    "model": "tiny_resnet",
    "model_kwargs": {"widths": [4, 8, 8, 16]},
    "epochs": 2,
    "batch_size": 8,
    "optimizer": "adamw",
    "lr": 0.01,
    "lr_schedule": "cosine",
    "val_fraction": 0.25,
    "center_crop": 64,
    "crop_jitter": 4,
    "augment": {"dihedral": True, "hsv": True, "hed": True},
    "num_threads": 1,
    "precision": "fp32",  # "auto" measures and may pick bf16 on one run and fp32 on the next
}


def _write_dataset(root: Path, n: int = 40) -> Path:
    """Kaggle layout: pink 'normal' patches; 'tumour' patches have a dark purple centre."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    rows = []
    for i in range(n):
        label = i % 2
        img = np.clip(rng.normal([230, 170, 200], 12, (96, 96, 3)), 0, 255)
        if label:
            img[28:68, 28:68] = np.clip(rng.normal([90, 40, 130], 15, (40, 40, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(root / "train" / f"p{i:03d}.png")
        rows.append((f"p{i:03d}", label))
    with open(root / "train_labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "label"), *rows])
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("data") / "patches")


def _cli(args: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["wsi-train", *args])
    with pytest.raises(SystemExit) as exc:
        train_main()
        raise SystemExit(0)
    return int(exc.value.code or 0)


def test_defaults_are_the_study_settings() -> None:
    cfg = TrainConfig()
    assert (cfg.model, cfg.optimizer, cfg.batch_size, cfg.epochs) == ("seed_cnn", "adam", 32, 10)
    assert cfg.lr_schedule == "exponential" and cfg.lr_decay < 1 and cfg.early_stopping > 0
    seed = TrainConfig.from_yaml(Path(__file__).parents[1] / "configs" / "seed.yaml")
    assert seed.model == "seed_cnn" and seed.batch_size == 32 and seed.epochs == 10
    assert (
        TrainConfig.from_yaml(Path(__file__).parents[1] / "configs" / "default.yaml").model == "context_cnn"
    )


def test_default_model_members_differ_only_in_seed() -> None:
    """configs/default.yaml and default_b.yaml: one network and recipe (HED jitter, EMA), two seeds,
    one validation split."""
    configs = Path(__file__).parents[1] / "configs"
    a = TrainConfig.from_yaml(configs / "default.yaml").to_dict()
    b = TrainConfig.from_yaml(configs / "default_b.yaml").to_dict()
    assert a["model_kwargs"] == {"widths": [24, 48, 96, 192], "dropout": 0.3, "stem": "conv"}
    assert (a["seed"], a["split_seed"], b["seed"], b["split_seed"]) == (0, 0, 1, 0)
    assert a["augment"]["hed"] and a["augment"]["hed_scale"] == 0.35 and a["ema_decay"] == 0.999
    differing = {key for key in a if a[key] != b[key]}
    assert differing == {"seed"}
    dense = TrainConfig.from_yaml(configs / "dense.yaml").to_dict()  # the shipped `--model dense`
    assert dense["model"] == "dense_cnn" and {key for key in a if a[key] != dense[key]} == {
        "model",
        "model_kwargs",
    }


def test_learning_rate_decays() -> None:
    for schedule in ("exponential", "cosine", "onecycle"):
        cfg = TrainConfig(lr_schedule=schedule, epochs=5)
        lrs = [lr_at(cfg.lr_schedule, cfg.lr, cfg.epochs, e, 0, 10, cfg.lr_decay) for e in range(1, 5)]
        assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)), schedule
        assert max(lrs) <= cfg.lr


def test_tiny_training_run_writes_every_artefact(dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert (
        _cli(["--data", str(dataset), "--config", str(cfg_path), "-o", str(run), "--quiet"], monkeypatch) == 0
    )
    assert "val AUC" in capsys.readouterr().out
    for name in (
        "log.csv",
        "loss.png",
        "accuracy.png",
        "train_config.yaml",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "model/model.safetensors",
        "model/config.json",
        "last/model.safetensors",
    ):
        assert (run / name).is_file(), name
    with open(run / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"

    model = load_model(run / "model")
    cfg = model.config
    assert cfg.architecture == "tiny_resnet" and cfg.center_crop == 64 and cfg.patch_size == 96
    assert cfg.class_names == ["normal", "tumor"]
    assert cfg.data["split"]["n_val"] == 10 and cfg.data["split"]["n_train"] == 30 and cfg.data["n"] == 40
    assert cfg.training["epochs"] == 2 and cfg.training["batch_size"] == 8
    assert set(cfg.metrics) >= {"accuracy", "auc", "accuracy_ci", "auc_ci", "confusion_matrix", "best_epoch"}
    cm = cfg.metrics["confusion_matrix"]
    assert cm["tn"] + cm["fp"] + cm["fn"] + cm["tp"] == 10
    assert all(s > 0 for s in cfg.std) and all(0 < m < 1 for m in cfg.mean)
    probs = model.predict_proba(np.zeros((2, 96, 96, 3), np.uint8))
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))


def test_training_is_seeded(dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({**TINY, "epochs": 1})
    a = train(dataset, cfg, tmp_path / "a", progress=False)
    b = train(dataset, cfg, tmp_path / "b", progress=False)
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-5)
    assert a.metrics["auc"] == pytest.approx(b.metrics["auc"], abs=1e-6)


def test_split_seed_keeps_the_split_while_seed_changes_the_weights(dataset: Path, tmp_path: Path) -> None:
    """Same ``split_seed``: the same training patches (same channel statistics), other weights."""

    def run(name: str, **extra) -> LoadedModel:
        cfg = TrainConfig.from_dict({**TINY, "epochs": 1, **extra})
        return load_model(train(dataset, cfg, tmp_path / name, progress=False).model_dir)

    model_a, model_b = run("a", seed=0, split_seed=5), run("b", seed=1, split_seed=5)
    a, b, c = model_a.config, model_b.config, run("c", seed=1).config  # c: the split follows seed
    assert a.mean == b.mean and a.std == b.std
    assert a.data["split"]["seed"] == b.data["split"]["seed"] == 5 and c.data["split"]["seed"] == 1
    assert a.mean != c.mean
    assert model_a.weights_sha256 != model_b.weights_sha256
    with pytest.raises(OptionError, match="split_seed"):
        TrainConfig.from_dict({**TINY, "split_seed": "x"})


def test_resume_continues_from_the_last_checkpoint(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "epochs": 1}))
    run = tmp_path / "run"
    base = ["--data", str(dataset), "-o", str(run), "--quiet"]
    assert _cli([*base, "--config", str(cfg_path)], monkeypatch) == 0
    first = (run / "log.csv").read_text().splitlines()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    # A second run into the same folder without --resume is refused ...
    assert _cli([*base, "--config", str(cfg_path)], monkeypatch) == 1
    # ... with --resume it picks up the saved settings and trains epoch 2 only.
    assert _cli([*base, "--resume", "--epochs", "2"], monkeypatch) == 0
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[:2] == first
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 2


@pytest.mark.parametrize(("interrupt_in_epoch", "mixup"), [(1, 0.0), (2, 0.0), (2, 0.4)])
def test_interrupted_run_resumes_to_the_uninterrupted_result(
    dataset: Path, tmp_path: Path, monkeypatch, interrupt_in_epoch: int, mixup: float
) -> None:
    """Ctrl-C in epoch 1 (no checkpoint yet) or later: --resume finishes with the same weights
    (also with mixup, whose blending is seeded per epoch)."""
    from wsi_pipeline.training import trainer

    cfg = TrainConfig.from_dict({**TINY, "epochs": 3, "mixup": mixup})
    full = train(dataset, cfg, tmp_path / "full", progress=False)
    real, calls = trainer.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_in_epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(dataset, cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(trainer, "train_epoch", real)
    with pytest.raises(OutputError, match="interrupted run; use --resume"):
        train(dataset, cfg, tmp_path / "run", progress=False)
    resumed = train(dataset, cfg, tmp_path / "run", resume=True, progress=False)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    a, b = load_model(full.model_dir).module.state_dict(), load_model(resumed.model_dir).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # --overwrite starts again from scratch in the same folder
    again = train(
        dataset,
        TrainConfig.from_dict({**TINY, "epochs": 1}),
        tmp_path / "run",
        overwrite=True,
        progress=False,
    )
    assert again.epochs_run == 1 and (tmp_path / "run" / "model").is_dir()


def test_mixup_blends_inputs_and_targets_alike() -> None:
    from wsi_pipeline.training.loop import Mixup

    targets = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    inputs = targets.reshape(-1, 1, 1, 1).expand(-1, 3, 4, 4) * 2.0 - 1.0  # each image encodes its label
    mixed, mixed_targets = Mixup(0.4, seed=3)(inputs, targets)
    assert torch.allclose(mixed, mixed_targets.reshape(-1, 1, 1, 1) * 2.0 - 1.0)  # same lam, same partner
    assert not torch.equal(mixed_targets, targets) and mixed_targets.min() >= 0 and mixed_targets.max() <= 1
    assert torch.equal(Mixup(0.4, seed=3)(inputs, targets)[0], mixed)  # seeded


def test_mixup_changes_training(dataset: Path, tmp_path: Path) -> None:
    """mixup reaches the training step (its exact resume is in the interrupted-run test)."""
    mixed = train(
        dataset, TrainConfig.from_dict({**TINY, "epochs": 1, "mixup": 0.4}), tmp_path / "m", progress=False
    )
    plain = train(dataset, TrainConfig.from_dict({**TINY, "epochs": 1}), tmp_path / "plain", progress=False)
    assert mixed.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"], rel=1e-4)


def test_diverging_run_stops_and_saves_no_model(dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A learning rate that blows the weights up: a one-line error, exit 1, no model written."""
    cfg_path = tmp_path / "boom.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "lr": 1e30, "lr_schedule": "none", "epochs": 3}))
    run = tmp_path / "run"
    assert (
        _cli(["--data", str(dataset), "--config", str(cfg_path), "-o", str(run), "--quiet"], monkeypatch) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0]
    assert not (run / "model").exists() and not (run / "checkpoints" / "best.pt").exists()


def test_resume_without_checkpoint_is_refused(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="nothing to resume"):
        train(dataset, TrainConfig.from_dict(TINY), tmp_path / "empty", resume=True, progress=False)


def test_early_stopping_stops_when_validation_loss_stalls(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from wsi_pipeline.training import validate

    # A model whose validation logits never change: epoch 1 is the best, then patience runs out.
    monkeypatch.setattr(
        validate, "predict_logits", lambda model, images, *a: np.zeros(len(images), np.float32)
    )
    cfg = TrainConfig.from_dict({**TINY, "epochs": 6, "early_stopping": 2, "augment": False})
    result = train(dataset, cfg, tmp_path / "run", progress=False)
    assert result.stopped_early and result.epochs_run == 3
    assert result.metrics["best_epoch"] == 1
    # Without early stopping all epochs run.
    cfg = TrainConfig.from_dict({**TINY, "epochs": 3, "early_stopping": 0, "augment": False})
    result = train(dataset, cfg, tmp_path / "run2", progress=False)
    assert not result.stopped_early and result.epochs_run == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "epochs must be"),
        ({"lr": -1}, "lr must be"),
        ({"batch_size": "big"}, "batch_size"),
        ({"optimizer": "lbfgs"}, "optimizer must be"),
        ({"stain_normalization": "vahadane"}, "stain_normalization"),
        ({"center_crop": 200}, "center_crop"),
        ({"mixup": -0.2}, "mixup must be >= 0"),
        ({"learning_rate": 0.1}, r"unknown setting\(s\) \['learning_rate'\]"),
        ({"augment": {"rotate": True}}, r"augment: unknown setting\(s\) \['rotate'\]"),
    ],
)
def test_bad_settings_are_rejected(settings: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        TrainConfig.from_dict({**TINY, **settings})


def test_cli_bad_inputs_exit_non_zero_with_one_line(
    dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: [1, 2\n")
    unknown_key = tmp_path / "unknown.yaml"
    unknown_key.write_text("epocs: 3\n")
    cases = [
        (["--data", str(tmp_path / "nope"), "-o", str(tmp_path / "r1")], "dataset path not found"),
        (
            ["--data", str(dataset), "--model", "no_such_net", "-o", str(tmp_path / "r2")],
            "unknown architecture",
        ),
        (
            ["--data", str(dataset), "--config", str(bad_yaml), "-o", str(tmp_path / "r3")],
            "cannot parse YAML",
        ),
        (["--data", str(dataset), "--config", str(unknown_key), "-o", str(tmp_path / "r4")], "epocs"),
        (
            ["--data", str(dataset), "--config", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "r5")],
            "config file not found",
        ),
        (["--data", str(dataset), "--epochs", "0", "-o", str(tmp_path / "r6")], "epochs must be"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert _cli(args, monkeypatch) == 1, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err, err


def test_unknown_model_fails_before_loading_data(tmp_path: Path) -> None:
    with pytest.raises(UnknownArchitectureError):
        train(tmp_path, TrainConfig.from_dict({**TINY, "model": "nope"}), tmp_path / "run", progress=False)


def test_study_model_with_centre_crop_32(dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(
        {"model": "seed_cnn", "epochs": 1, "center_crop": 32, "val_fraction": 0.25, "num_threads": 1}
    )
    result = train(dataset, cfg, tmp_path / "run", progress=False)
    loaded = load_model(result.model_dir)
    assert loaded.config.center_crop == 32 and loaded.config.arch_kwargs == {"input_size": 32}
    assert loaded.config.training["optimizer"] == "adam" and loaded.config.training["batch_size"] == 32
    assert loaded.predict_proba(np.zeros((3, 96, 96, 3), np.uint8)).shape == (3,)


def test_ensemble_records_metrics_on_the_members_validation_split(
    dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from wsi_pipeline.data import load_arrays, open_patch_dataset, stratified_split

    def member(name: str, **extra) -> Path:
        cfg = TrainConfig.from_dict({**TINY, "epochs": 1, **extra})
        return train(dataset, cfg, tmp_path / name, progress=False).model_dir

    a, b = member("a", seed=0, split_seed=3), member("b", seed=1, split_seed=3)
    out = tmp_path / "ens"
    assert (
        run_wsi_pipeline(monkeypatch, ["ensemble", str(a), str(b), "-o", str(out), "--data", str(dataset)])
        == 0
    )
    ens = load_model(out)
    metrics = ens.config.metrics
    assert metrics["split"] == "validation" and metrics["n"] == 10
    ds = open_patch_dataset(dataset)
    _, val = stratified_split(np.asarray(ds.labels), 0.25, seed=3)
    images, labels = load_arrays(ds, val)
    pred = ens.predict_proba(images) >= 0.5
    assert metrics["accuracy"] == pytest.approx((pred == labels).mean())
    assert metrics["confusion_matrix"]["tp"] == int((pred & (labels == 1)).sum())
    assert "validation (10 patches)" in capsys.readouterr().out
    # A member trained on another split is refused, and nothing is written.
    c = member("c", seed=1)
    bad = tmp_path / "bad"
    assert (
        run_wsi_pipeline(monkeypatch, ["ensemble", str(a), str(c), "-o", str(bad), "--data", str(dataset)])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "differs" in err and not bad.exists()
