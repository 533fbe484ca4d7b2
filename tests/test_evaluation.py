"""Metrics against hand-computed cases and sklearn; bootstrap; TTA; prediction order; plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from wsi_pipeline.d4 import NHWC, dihedral
from wsi_pipeline.data import open_patch_dataset, stratified_sample
from wsi_pipeline.errors import DatasetError, OptionError
from wsi_pipeline.evaluation import (
    accuracy,
    bootstrap_intervals,
    classification_report,
    compute_metrics,
    confusion_matrix,
    evaluate_model,
    format_report,
    predict_dataset,
    predict_patches,
    roc_auc,
)
from wsi_pipeline.evaluation.metrics import _resample_counts
from wsi_pipeline.evaluation.plots import plot_confusion_matrix, plot_roc
from wsi_pipeline.models import ModelConfig, create_model, load_model, save_model

LABELS = np.array([0, 0, 1, 1, 1])
PROBS = np.array([0.1, 0.6, 0.4, 0.8, 0.9])


def test_hand_computed_small_case() -> None:
    # predictions [0, 1, 0, 1, 1]: tn=1 fp=1 fn=1 tp=2
    assert confusion_matrix(LABELS, PROBS).tolist() == [[1, 1], [1, 2]]
    assert accuracy(LABELS, PROBS) == pytest.approx(3 / 5)
    # positive > negative pairs: (0.4>0.1), (0.8, 0.9 beat both) = 5 of 6
    assert roc_auc(LABELS, PROBS) == pytest.approx(5 / 6)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # tie counts half
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.9])))
    # threshold is inclusive: prob 0.5 -> tumour
    assert confusion_matrix(np.array([1]), np.array([0.5])).tolist() == [[0, 0], [0, 1]]
    rep = classification_report(LABELS, PROBS)
    assert rep["normal"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2})
    two_thirds = {"precision": 2 / 3, "recall": 2 / 3, "f1-score": 2 / 3, "support": 3}
    assert rep["tumor"] == pytest.approx(two_thirds)
    assert rep["macro avg"]["f1-score"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert rep["weighted avg"]["precision"] == pytest.approx((2 * 0.5 + 3 * 2 / 3) / 5)
    assert rep["weighted avg"]["support"] == 5


def test_matches_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.35 * y + 0.65 * rng.random(500), 0, 1).round(2)  # many ties
    np.testing.assert_array_equal(confusion_matrix(y, p), skm.confusion_matrix(y, p >= 0.5))
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    ours = classification_report(y, p)
    theirs = skm.classification_report(y, p >= 0.5, target_names=["normal", "tumor"], output_dict=True)
    for key in ("normal", "tumor", "macro avg", "weighted avg"):
        for metric in ("precision", "recall", "f1-score", "support"):
            assert ours[key][metric] == pytest.approx(theirs[key][metric])


def test_no_predictions_for_a_class_gives_zero_not_error() -> None:
    rep = classification_report(np.array([0, 1, 1]), np.array([0.9, 0.8, 0.7]))
    assert rep["normal"]["precision"] == 0.0 and rep["normal"]["f1-score"] == 0.0
    assert rep["tumor"]["recall"] == 1.0


def test_bad_metric_inputs() -> None:
    with pytest.raises(DatasetError, match="0 patches"):
        confusion_matrix(np.array([]), np.array([]))
    with pytest.raises(DatasetError, match="labels must be 0 or 1"):
        confusion_matrix(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="3 labels but 2 probabilities"):
        confusion_matrix(np.array([0, 1, 1]), np.array([0.1, 0.2]))


def test_vectorised_bootstrap_auc_matches_explicit_resamples() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = (0.3 * y + 0.7 * rng.random(300)).round(2)
    counts = _resample_counts(np.random.default_rng(5), 300, 6)
    assert (counts.sum(axis=1) == 300).all()
    from wsi_pipeline.evaluation.metrics import _weighted_auc

    order = np.argsort(p, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(p[order]) != 0])
    fast = _weighted_auc(counts[:, order], y[order].astype(np.int32), starts)
    for row, value in zip(counts, fast, strict=True):
        idx = np.repeat(np.arange(300), row)
        assert value == pytest.approx(skm.roc_auc_score(y[idx], p[idx]))


def test_bootstrap_intervals_seeded_and_sensible() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.4 * y + 0.6 * rng.random(400), 0, 1)
    a = bootstrap_intervals(y, p, n_boot=500, seed=7)
    b = bootstrap_intervals(y, p, n_boot=500, seed=7, max_elements=1000)  # chunked: same draws
    assert a == b
    assert a != bootstrap_intervals(y, p, n_boot=500, seed=8)
    for key, point in (("accuracy", accuracy(y, p)), ("auc", roc_auc(y, p))):
        lo, hi = a[key]
        assert lo < point < hi and hi - lo < 0.2
    perfect = bootstrap_intervals(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), n_boot=200)
    assert perfect["accuracy"] == [1.0, 1.0] and perfect["auc"] == [1.0, 1.0]
    assert bootstrap_intervals(y, p, n_boot=0)["auc"] is None


def test_compute_metrics_consistency_and_text() -> None:
    m = compute_metrics(LABELS, PROBS, n_boot=100)
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    assert tn + fp + fn + tp == m["n"] == 5
    assert m["accuracy"] == pytest.approx((tn + tp) / m["n"])
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    text = format_report(m)
    assert "precision" in text and "weighted avg" in text
    assert "AUC         0.8333 (95% CI" in text
    assert "true normal" in text and "pred tumor" in text
    one_class = compute_metrics(np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9]), n_boot=50)
    assert one_class["auc"] is None and one_class["specificity"] is None
    assert "AUC         n/a (one class)" in format_report(one_class)


def _nhwc_views(x: np.ndarray) -> list[np.ndarray]:
    """The 8 dihedral views of an NHWC batch, through the one D4 implementation."""
    t = torch.from_numpy(x)
    return [dihedral(t, k, NHWC).contiguous().numpy() for k in range(8)]


def test_dihedral_transforms_are_the_eight_symmetries() -> None:
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    views = _nhwc_views(x)
    assert len(views) == 8
    np.testing.assert_array_equal(views[0], x)
    assert len({v.tobytes() for v in views}) == 8
    rotated = np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2)))  # the set is closed under the group
    assert {v.tobytes() for v in _nhwc_views(rotated)} == {v.tobytes() for v in views}


def _seed_cnn(tmp_path: Path):
    """A small untrained seed_cnn on the 32 px centre crop, saved and loaded like a trained one."""
    torch.manual_seed(0)
    kwargs = {"dense": 16, "input_size": 32}
    cfg = ModelConfig(architecture="seed_cnn", arch_kwargs=kwargs, name="tiny", center_crop=32)
    return load_model(save_model(tmp_path / "cnn", create_model("seed_cnn", **kwargs), cfg))


class _TopLeftProbe(torch.nn.Module):
    """logit = 10 * mean(red of the top-left quadrant) - 5: deliberately not rotation invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # predict_proba finds the device from it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return 10.0 * x[:, 0, : h // 2, : w // 2].mean(dim=(1, 2)) - 5.0


def test_tta_is_mean_of_the_eight_views(tmp_path: Path) -> None:
    from wsi_pipeline.models.io import LoadedModel

    probe = LoadedModel(_TopLeftProbe(), ModelConfig(architecture="probe"), tmp_path, "")
    x = np.zeros((2, 96, 96, 3), np.uint8)
    x[0, :48, :48, 0] = 255  # red top-left quadrant
    x[1, 48:, 48:, 0] = 255  # red bottom-right quadrant
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    plain = predict_patches(probe, x)
    np.testing.assert_allclose(plain, [sig(5), sig(-5)], rtol=1e-5)
    # Each quadrant lands top-left in exactly 2 of the 8 dihedral views.
    tta = predict_patches(probe, x, tta=True)
    np.testing.assert_allclose(tta, [(2 * sig(5) + 6 * sig(-5)) / 8] * 2, rtol=1e-5)
    # Same with a real CNN saved and loaded from disk: TTA is the mean over the views.
    model = _seed_cnn(tmp_path)
    expected = np.mean([model.predict_proba(v) for v in _nhwc_views(x)], axis=0)
    np.testing.assert_allclose(predict_patches(model, x, tta=True), expected, rtol=1e-5)


def test_predict_dataset_keeps_order_across_prefetched_chunks(shared_data: Path, tmp_path: Path) -> None:
    model = _seed_cnn(tmp_path)
    ds = open_patch_dataset(shared_data / "pcam_h5_sample", split="valid")
    idx = np.array([63, 0, 17, 5, 40, 41, 2])
    probs = predict_dataset(model, ds, idx, batch_size=2, read_chunk=3)
    np.testing.assert_allclose(probs, model.predict_proba(ds.read(idx)), rtol=1e-5, atol=1e-6)
    with pytest.raises(OptionError, match="batch size must be positive"):
        predict_dataset(model, ds, idx, batch_size=0)


def test_evaluate_model_on_sample(shared_data: Path, tmp_path: Path) -> None:
    model = _seed_cnn(tmp_path)
    ds = open_patch_dataset(shared_data / "pcam_h5_sample", split="train")
    result = evaluate_model(model, ds, sample=40, seed=3, n_boot=100)
    np.testing.assert_array_equal(result.indices, stratified_sample(ds.labels, 40, 3))
    assert result.metrics["n"] == 40 and len(result.probs) == 40
    assert result.metrics["confusion_matrix"] == confusion_matrix(result.labels, result.probs).tolist()
    d = result.to_dict()
    assert d["model"]["architecture"] == "seed_cnn" and d["data"]["source"] == "PCamH5Dataset"
    assert d["sample"] == 40 and d["tta"] is False


def test_resolve_device() -> None:
    from wsi_pipeline.devices import resolve_device

    assert str(resolve_device("cpu")) == "cpu"
    assert str(resolve_device("auto")) == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="no CUDA device"):
            resolve_device("cuda")


def test_plots_are_pngs(tmp_path: Path) -> None:
    roc = plot_roc(LABELS, PROBS, tmp_path / "a" / "roc.png", auc=5 / 6)
    cm = plot_confusion_matrix([[1, 1], [1, 2]], tmp_path / "cm.png")
    for path in (roc, cm):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
