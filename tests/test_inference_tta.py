"""wsi-infer --tta: each tile's probability is the mean over its 8 dihedral views, equal to what
wsi-eval --tta computes for the same patches, with the model's calibration applied per view."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_helpers import save_small_bn_model

from wsi_pipeline.errors import OptionError
from wsi_pipeline.evaluation.predict import predict_patches
from wsi_pipeline.inference import TileInference
from wsi_pipeline.models import load_model
from wsi_pipeline.options import InferenceOptions


def _model_with_temperature(tmp_path, temperature: float):
    folder = save_small_bn_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["calibration"] = {"method": "temperature", "temperature": temperature}
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder)
    assert model.config.temperature == pytest.approx(temperature)
    return model


def test_tta_tiles_equal_the_mean_of_the_eight_calibrated_views(tmp_path) -> None:
    model = _model_with_temperature(tmp_path, 1.7)
    tile = model.config.patch_size
    rows, cols = 3, 4
    image = np.random.default_rng(0).integers(0, 256, (rows * tile, cols * tile, 3), dtype=np.uint8)

    def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
        return image[row0 * tile : (row0 + n_rows) * tile, col0 * tile : (col0 + n_cols) * tile].copy()

    cells = np.argwhere(np.ones((rows, cols), dtype=bool))
    tiles = np.stack([image[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r, c in cells])
    tta = TileInference(model, precision="fp32", tta=True, batch_size=5).run(cells, read_block, tile, tile)
    plain = TileInference(model, precision="fp32", batch_size=5).run(cells, read_block, tile, tile)
    np.testing.assert_allclose(tta.probs, predict_patches(model, tiles, tta=True), atol=2e-5)
    np.testing.assert_allclose(plain.probs, predict_patches(model, tiles), atol=2e-5)
    assert np.abs(tta.probs - plain.probs).max() > 1e-3  # the views really differ for this network
    assert tta.stats.mode == "tiles x8 views"


def test_tta_option_is_checked_and_changes_the_resume_key() -> None:
    assert InferenceOptions(tta=True).result_params()["tta"] is True
    assert InferenceOptions().result_params() != InferenceOptions(tta=True).result_params()
    with pytest.raises(OptionError, match="tta"):
        InferenceOptions(tta="yes")  # type: ignore[arg-type]
