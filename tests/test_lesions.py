"""The decision rule on hand-built heatmaps, its invariant on random ones, and the calibration fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.aggregation import CATEGORY_MACRO, CATEGORY_MICRO, CATEGORY_NONE, SlideAggregate
from wsi_pipeline.errors import ModelConfigError
from wsi_pipeline.lesions import apply_rule, candidate_regions, region_confidence, resolve_rule
from wsi_pipeline.models.calibration import (
    DEFAULT_RULE,
    Calibration,
    DecisionRule,
    calibrated,
    calibration_report,
    fit_temperature,
)
from wsi_pipeline.models.config import ModelConfig

CELL_UM = 93.3  # a 96 px PCam tile at 0.972 um/px
RULE = DecisionRule(high=0.9, low=0.5, support_mm2=0.026)  # k = 3 cells of 93 um


def _background(rows: int = 72, cols: int = 72, value: float = 0.05) -> np.ndarray:
    hm = np.full((rows, cols), value, dtype=np.float32)
    hm[:, :4] = np.nan  # some glass
    return hm


def test_support_cells_follow_the_cell_size() -> None:
    assert RULE.support_cells(CELL_UM) == 3
    assert RULE.support_cells(CELL_UM / 2) == 12
    assert DecisionRule(support_mm2=0.0).support_cells(CELL_UM) == 1


def test_region_confidence_counts_missing_cells_as_zero() -> None:
    assert region_confidence(np.array([0.9, 0.6]), 3) == pytest.approx(0.5)
    assert region_confidence(np.array([1.0, 0.8, 0.6, 0.1]), 3) == pytest.approx(0.8)


def test_scattered_false_positives_give_no_lesion() -> None:
    rng = np.random.default_rng(1)
    hm = _background()
    # ~5 % of the tissue at 0.6-1.0: single cells and adjacent pairs, never three in a row
    for r in range(1, 71, 4):
        for c in range(6, 71, 4):
            if rng.random() < 0.6:
                hm[r, c] = rng.uniform(0.6, 1.0)
                if rng.random() < 0.5:
                    hm[r, c + 1] = rng.uniform(0.6, 1.0)
    agg = apply_rule(hm, CELL_UM, RULE)
    assert agg.n_candidate_regions > 30
    assert agg.regions == () and agg.category == CATEGORY_NONE
    assert agg.slide_score < RULE.high and agg.tumor_area_mm2 == 0.0 and agg.largest_tumor_region_mm == 0.0
    # the raw >= 0.5 reading of the old rule would have called this slide: the pairs are 0.21 mm
    assert max(len(c.cells) for c in candidate_regions(hm, 0.5)) == 2


def test_one_compact_lesion_has_the_right_category_size_and_confidence() -> None:
    hm = _background()
    hm[30:36, 40:46] = 0.97  # 6 x 6 cells of 93.3 um: max Feret 6 * sqrt(2) cells = 0.79 mm
    hm[30, 40] = 0.99
    hm[10, 10] = hm[10, 11] = 0.95  # a false-positive pair elsewhere
    agg = apply_rule(hm, CELL_UM, RULE)
    assert agg.category == CATEGORY_MICRO
    (lesion,) = agg.regions
    assert lesion.max_diameter_mm == pytest.approx(6 * math.sqrt(2) * CELL_UM / 1000)
    assert agg.largest_tumor_region_mm == pytest.approx(0.792, abs=1e-3)
    assert lesion.area_mm2 == pytest.approx(36 * (CELL_UM / 1000) ** 2)
    assert lesion.confidence == pytest.approx((0.99 + 0.97 + 0.97) / 3, abs=1e-6)
    assert lesion.peak_cell == (30, 40)
    assert agg.slide_score == pytest.approx(lesion.confidence)
    assert agg.tumor_threshold == RULE.low


def test_macro_lesion_is_grown_over_low_cells_around_its_seeds() -> None:
    hm = _background()
    hm[20:46, 20:30] = 0.6  # 26 cells long: 2.6 mm of cells >= low ...
    hm[30:33, 24:27] = 0.95  # ... around a core of seeds >= high
    agg = apply_rule(hm, CELL_UM, RULE)
    assert agg.category == CATEGORY_MACRO and len(agg.regions) == 1
    assert agg.largest_tumor_region_mm == pytest.approx(math.hypot(26, 10) * CELL_UM / 1000)
    # without seeds the same region of 0.6 is only a candidate
    hm[30:33, 24:27] = 0.6
    weak = apply_rule(hm, CELL_UM, RULE)
    assert weak.category == CATEGORY_NONE and weak.slide_score == pytest.approx(0.6)


def test_score_and_category_agree_on_random_heatmaps() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = tuple(rng.integers(3, 40, size=2))
        noise = ndimage.gaussian_filter(rng.random(shape), sigma=rng.uniform(0.0, 2.0))
        hm = np.clip((noise - noise.mean()) * rng.uniform(1, 8) + rng.uniform(0, 0.8), 0, 1)
        hm = hm.astype(np.float32)
        hm[rng.random(shape) < rng.uniform(0, 0.4)] = np.nan
        low = float(rng.uniform(0.05, 0.9))
        rule = DecisionRule(
            high=float(rng.uniform(low, 1.0)), low=low, support_mm2=float(rng.uniform(0, 0.1))
        )
        agg = apply_rule(hm, float(rng.uniform(20, 200)), rule)
        if not np.isfinite(hm).any():
            assert math.isnan(agg.slide_score) and agg.category == CATEGORY_NONE
            continue
        called = agg.category != CATEGORY_NONE
        assert called == bool(agg.regions) == (agg.slide_score >= rule.high), trial
        assert 0.0 <= agg.slide_score <= 1.0
        if called:
            assert agg.slide_score == pytest.approx(max(r.confidence for r in agg.regions))
            assert all(r.confidence >= rule.high and r.max_prob >= rule.high for r in agg.regions)


def test_aggregate_refuses_a_category_without_regions() -> None:
    with pytest.raises(ValueError, match="kept region"):
        SlideAggregate(0.2, "m", 10, 0.5, 0.0, 0.3, CATEGORY_MICRO, ())


def test_rule_sources() -> None:
    rule, sources = resolve_rule(None, {"low": None, "high": 0.8, "support_mm2": None})
    assert rule.high == 0.8 and rule.low == DEFAULT_RULE.low
    assert sources == {"high": "CLI", "low": "built-in default", "support_mm2": "built-in default"}
    model_rule = DecisionRule(high=0.7, low=0.4, support_mm2=0.05)
    rule, sources = resolve_rule(model_rule, {"low": 0.45, "high": None, "support_mm2": None})
    assert (rule.high, rule.low, rule.support_mm2) == (0.7, 0.45, 0.05)
    assert sources == {"high": "model config", "low": "CLI", "support_mm2": "model config"}
    with pytest.raises(ModelConfigError, match="must not be above"):
        resolve_rule(model_rule, {"low": 0.8})


def test_calibration_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(3)
    true_logits = rng.normal(0.0, 2.5, 40_000)
    labels = (rng.random(true_logits.size) < 1 / (1 + np.exp(-true_logits))).astype(np.int64)
    for temperature in (0.5, 2.5):
        fitted = fit_temperature(true_logits * temperature, labels)  # an over/under-confident model
        assert fitted == pytest.approx(temperature, rel=0.05)
    report = calibration_report(true_logits * 2.5, labels, 2.5)
    assert report["nll_calibrated"] < report["nll_uncalibrated"]
    assert report["ece_calibrated"] < 0.02 < report["ece_uncalibrated"]
    np.testing.assert_allclose(
        calibrated(np.array([0.0, 2.0]), 2.0), [0.5, 1 / (1 + math.exp(-1))], rtol=1e-6
    )
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.zeros(3), np.ones(3))


def test_model_config_sections_round_trip_and_old_configs_read(tmp_path: Path) -> None:
    config = ModelConfig(architecture="seed_cnn")
    assert config.temperature == 1.0 and config.rule == DEFAULT_RULE
    assert "calibration" not in config.to_dict() and "decision_rule" not in config.to_dict()
    config.calibration = Calibration(temperature=1.7, fitted_on={"n": 950})
    config.decision_rule = DecisionRule(high=0.8, low=0.4, support_mm2=0.04)
    config.save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["calibration"]["temperature"] == 1.7 and data["decision_rule"]["high"] == 0.8
    loaded = ModelConfig.load(tmp_path)
    assert loaded.temperature == 1.7 and loaded.rule == config.decision_rule
    for section, bad, message in (
        ("calibration", {"temperature": 0}, "temperature must be within"),
        ("decision_rule", {"high": 0.3, "low": 0.5}, "must not be above"),
        ("decision_rule", {"hihg": 0.3}, "unknown setting"),
    ):
        (tmp_path / "config.json").write_text(json.dumps({**data, section: bad}))
        with pytest.raises(ModelConfigError, match=message):
            ModelConfig.load(tmp_path)
