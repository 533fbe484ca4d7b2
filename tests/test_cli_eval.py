"""``wsi-eval`` end to end on real files: a saved probe model whose probabilities are known exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.cli import evaluate as cli_eval
from wsi_pipeline.models import ModelConfig, create_model, save_model
from wsi_pipeline.testing import probe_probability

PROBE = {"red": 6.0, "green": 0.0, "blue": -6.0, "bias": 0.0}


def save_probe(directory: Path) -> Path:
    cfg = ModelConfig(architecture="mean_intensity_probe", arch_kwargs=PROBE, name="probe")
    return save_model(directory, create_model("mean_intensity_probe", **PROBE), cfg)


def make_dataset(root: Path, n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle layout; tumour patches lean red, normal ones blue, with overlap (imperfect classifier)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.int64)
    (root / "train").mkdir(parents=True)
    rows, pixels = ["id,label"], []
    for i, lab in enumerate(labels):
        base = np.array([150, 90, 150], dtype=np.int64)
        shift = int(rng.integers(-25, 60)) if lab else int(rng.integers(-60, 25))
        base += [shift, 0, -shift]
        arr = np.clip(base + rng.integers(-30, 30, (96, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / "train" / f"p{i:02d}.png")
        rows.append(f"p{i:02d},{lab}")
        pixels.append(arr)
    (root / "train_labels.csv").write_text("\n".join(rows) + "\n")
    return np.stack(pixels), labels


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point (run_cli) in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["wsi-eval", *args])
    code = 0
    try:
        cli_eval.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_matches_reference_probabilities(tmp_path: Path, monkeypatch, capsys) -> None:
    pixels, labels = make_dataset(tmp_path / "data")
    model = save_probe(tmp_path / "model")
    expected = np.array([probe_probability(p, **PROBE) for p in pixels])
    pred = (expected >= 0.5).astype(int)
    cm = [
        [int(((pred == 0) & (labels == 0)).sum()), int(((pred == 1) & (labels == 0)).sum())],
        [int(((pred == 0) & (labels == 1)).sum()), int(((pred == 1) & (labels == 1)).sum())],
    ]
    assert 0 < cm[0][1] + cm[1][0] < 15, "fixture should make a few mistakes"
    code, out, err = run(
        monkeypatch,
        capsys,
        *("--data", str(tmp_path / "data"), "--model", str(model), "--device", "cpu"),
        *("--json", str(tmp_path / "out" / "m.json"), "--plots", str(tmp_path / "plots")),
        *("--predictions", str(tmp_path / "pred.csv"), "--bootstrap", "200"),
    )
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "m.json").read_text())
    assert result["n"] == 30 and result["n_tumor"] == 10
    assert result["confusion_matrix"] == cm
    assert sum(map(sum, result["confusion_matrix"])) == result["n"]
    assert result["accuracy"] == pytest.approx((cm[0][0] + cm[1][1]) / 30)
    from sklearn.metrics import roc_auc_score

    assert result["auc"] == pytest.approx(roc_auc_score(labels, expected), abs=1e-6)
    for key in ("accuracy", "auc"):
        lo, hi = result["intervals"][key]
        assert lo <= result[key] <= hi
    assert result["report"]["tumor"]["support"] == 10 and result["report"]["normal"]["support"] == 20
    assert result["report"]["tumor"]["recall"] == pytest.approx(cm[1][1] / 10)
    assert result["model"]["architecture"] == "mean_intensity_probe" and result["tta"] is False
    # the printed report carries the same numbers
    assert f"{result['accuracy']:.4f}" in out and "weighted avg" in out and "true tumor" in out
    assert "evaluating" not in err  # tqdm progress bar only when stderr is a terminal (not here)
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0] == "id,label,prob_tumor" and len(rows) == 31
    got = np.array([float(r.split(",")[2]) for r in rows[1:]])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    for name in ("roc.png", "confusion_matrix.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_sample_and_tta(tmp_path: Path, monkeypatch, capsys) -> None:
    make_dataset(tmp_path / "data", n=60)
    model = save_probe(tmp_path / "model")
    args = ("--data", str(tmp_path / "data"), "--model", str(model), "--no-progress", "--sample", "15")
    code, _, err = run(monkeypatch, capsys, *args, "--json", str(tmp_path / "a.json"))
    assert code == 0, err
    assert "evaluating" not in err  # --no-progress
    code, out, _ = run(monkeypatch, capsys, *args, "--tta", "--json", str(tmp_path / "b.json"))
    assert code == 0 and "with TTA" in out
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert a["n"] == 15 and a["n_tumor"] == 5 and a["sample"] == 15  # stratified: 1/3 tumour
    # The colour-mean probe is invariant to flips/rotations, so TTA must not change anything.
    assert b["tta"] is True and b["confusion_matrix"] == a["confusion_matrix"]
    assert b["auc"] == pytest.approx(a["auc"], abs=1e-6)


def test_real_patches_pcam_split(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    model = save_probe(tmp_path / "model")
    data = shared_data / "pcam_h5_sample"
    code, _, err = run(monkeypatch, capsys, "--data", str(data), "--model", str(model))
    assert code == 1 and "choose one (split / --split)" in err
    code, _, err = run(
        monkeypatch,
        capsys,
        *("--data", str(data), "--split", "valid", "--model", str(model), "--json", str(tmp_path / "v.json")),
    )
    assert code == 0, err
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["n"] == 64 and result["data"]["split"] == "valid"
    assert 0.0 <= result["auc"] <= 1.0


def test_real_hcd_sample(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    model = save_probe(tmp_path / "model")
    code, out, err = run(
        monkeypatch,
        capsys,
        *("--data", str(shared_data / "hcd_patches"), "--model", str(model), "--sample", "200"),
        *("--json", str(tmp_path / "h.json"), "--no-progress"),
    )
    assert code == 0, err
    result = json.loads((tmp_path / "h.json").read_text())
    assert result["n"] == 200 and result["n_tumor"] == 81  # 40.4 % of 200, stratified
    assert result["data"]["source"] == "KaggleDataset" and result["data"]["n"] == 9491


def test_bad_inputs_exit_1_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    make_dataset(tmp_path / "data", n=6)
    model = str(save_probe(tmp_path / "model"))
    data = str(tmp_path / "data")
    cases = [
        (("--data", str(tmp_path / "missing"), "--model", model), "dataset path not found"),
        (("--data", data, "--model", str(tmp_path / "nomodel")), "model folder not found"),
        (("--data", data, "--model", model, "--sample", "0"), "--sample must be a positive"),
        (("--data", data, "--model", model, "--batch-size", "0"), "--batch-size must be positive"),
        (("--data", data, "--model", model, "--json", str(tmp_path)), "is a folder, expected a file path"),
        (("--data", data, "--model", model, "--split", "valid"), "split='valid' applies only to PCam"),
    ]
    for args, message in cases:
        code, out, err = run(monkeypatch, capsys, *args, "--no-progress")
        assert code == 1, (args, out, err)
        assert err.startswith("error: ") and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.json"))
    code, _, err = run(monkeypatch, capsys, "--model", model)
    assert code == 2 and "Missing option '--data'" in err


def test_missing_default_model_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from wsi_pipeline.models import io

    make_dataset(tmp_path / "data", n=6)
    monkeypatch.setattr(io, "DEFAULT_MODEL_DIR", tmp_path / "no_default")
    code, _, err = run(monkeypatch, capsys, "--data", str(tmp_path / "data"))
    assert code == 1 and "no_default: model folder not found" in err


def test_cuda_request_without_gpu(tmp_path: Path, monkeypatch, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    make_dataset(tmp_path / "data", n=6)
    code, _, err = run(monkeypatch, capsys, "--data", str(tmp_path / "data"), "--device", "cuda")
    assert code == 1 and "no CUDA device is available" in err


@pytest.mark.slow
def test_console_script(tmp_path: Path) -> None:
    """The installed ``wsi-eval`` entry point runs as a separate process; a bad path exits 1.

    The process has not imported ``wsi_pipeline.testing``, so the model is a (tiny, untrained)
    built-in architecture rather than the test probe."""
    exe = Path(sys.executable).with_name("wsi-eval")
    if not exe.exists():
        pytest.skip("wsi-eval console script not installed in this environment")
    make_dataset(tmp_path / "data", n=9)
    kwargs = {"widths": [4, 8]}
    model = save_model(
        tmp_path / "model", create_model("context_cnn", **kwargs), ModelConfig("context_cnn", kwargs)
    )
    args = [str(exe), "--data", str(tmp_path / "data"), "--model", str(model)]
    args += ["--json", str(tmp_path / "r.json")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 9
    assert "accuracy" in proc.stdout


def _probe_trained_on(tmp_path: Path, data: Path, train_rows: np.ndarray) -> Path:
    """A probe model folder whose config records the data's split and whose hashes name ``train_rows``."""
    from wsi_pipeline.data import open_patch_dataset, stratified_split
    from wsi_pipeline.data.hashes import patch_hashes

    dataset = open_patch_dataset(data)
    images = dataset.read(np.arange(len(dataset)))
    train, val = stratified_split(dataset.labels, 0.25, seed=3)
    split = {
        "method": "stratified_split",
        "val_fraction": 0.25,
        "seed": 3,
        "n_train": len(train),
        "n_val": len(val),
        "n_val_tumor": int(dataset.labels[val].sum()),
    }
    cfg = ModelConfig(
        architecture="mean_intensity_probe",
        arch_kwargs=PROBE,
        name="probe",
        data={**dataset.describe(), "split": split},
    )
    return save_model(
        tmp_path / "model",
        create_model("mean_intensity_probe", **PROBE),
        cfg,
        train_hashes=patch_hashes(images, train_rows if train_rows is not None else train),
    )


def test_split_val_scores_only_the_recorded_validation_split(tmp_path: Path, monkeypatch, capsys) -> None:
    from wsi_pipeline.data import stratified_split

    pixels, labels = make_dataset(tmp_path / "data", n=40)
    model = _probe_trained_on(tmp_path, tmp_path / "data", None)
    out_json = tmp_path / "m.json"
    code, out, err = run(
        monkeypatch,
        capsys,
        "--data",
        str(tmp_path / "data"),
        "--model",
        str(model),
        "--split",
        "val",
        "--json",
        str(out_json),
        "--no-progress",
    )
    assert code == 0, err
    _, val = stratified_split(labels, 0.25, seed=3)
    metrics = json.loads(out_json.read_text())
    assert metrics["n"] == len(val) and metrics["n_train_overlap"] == 0 and "warning" not in err
    expected = np.array([probe_probability(pixels[i], **PROBE) for i in val])
    assert metrics["confusion_matrix"][1][1] == int(((expected >= 0.5) & (labels[val] == 1)).sum())


def test_scoring_training_patches_warns_with_the_count(tmp_path: Path, monkeypatch, capsys) -> None:
    make_dataset(tmp_path / "data", n=40)
    model = _probe_trained_on(tmp_path, tmp_path / "data", np.arange(0, 40, 2))  # 20 training patches
    code, out, err = run(
        monkeypatch, capsys, "--data", str(tmp_path / "data"), "--model", str(model), "--no-progress"
    )
    assert code == 0
    assert "warning: 20 of the 40 evaluated patches (50.0 %) were training patches" in err


def test_restained_scores_are_reported_beside_the_plain_ones(tmp_path: Path, monkeypatch, capsys) -> None:
    make_dataset(tmp_path / "data", n=30)
    out_json = tmp_path / "m.json"
    code, out, err = run(
        monkeypatch,
        capsys,
        "--data",
        str(tmp_path / "data"),
        "--model",
        str(save_probe(tmp_path / "model")),
        "--restain",
        "default",
        "--restain",
        "1,1",
        "--json",
        str(out_json),
        "--no-progress",
    )
    assert code == 0, err
    metrics = json.loads(out_json.read_text())
    stainings = [(r["haematoxylin"], r["eosin"]) for r in metrics["restained"]]
    assert stainings == [(0.7, 1.3), (1.3, 0.8), (1.0, 1.0)]
    identity = metrics["restained"][2]
    assert identity["accuracy"] == metrics["accuracy"]  # x1, x1 changes nothing beyond rounding
    assert "re-stained H x0.7, E x1.3: AUC" in out
    code, _, err = run(monkeypatch, capsys, "--data", str(tmp_path / "data"), "--restain", "pale")
    assert code != 0 and "--restain takes H,E factors" in err


def test_restaining_keeps_white_and_scales_stain_density() -> None:
    from wsi_pipeline.evaluation.restain import restain_patches

    white = np.full((1, 4, 4, 3), 255, np.uint8)
    assert np.array_equal(restain_patches(white, 0.7, 1.3), white)
    purple = np.tile(np.array([120, 60, 160], np.uint8), (1, 4, 4, 1))
    paler = restain_patches(purple, 0.5, 1.0).astype(int)
    darker = restain_patches(purple, 1.5, 1.0).astype(int)
    assert (paler.sum() > purple.astype(int).sum()) and (darker.sum() < purple.astype(int).sum())
