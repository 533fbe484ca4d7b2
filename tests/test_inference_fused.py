"""Engine speed-ups keep results: BatchNorm folding and the centre crop taken while batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import save_small_bn_model

from wsi_pipeline.inference import TileInference, inference_module
from wsi_pipeline.models import load_model


def _bn_model(folder: Path, center_crop: int | None):  # type: ignore[no-untyped-def]
    return load_model(
        save_small_bn_model(
            folder, center_crop=center_crop, seed=5, mean=(0.6, 0.5, 0.7), std=(0.2, 0.25, 0.2)
        )
    )


def test_fused_module_matches_and_leaves_the_original_alone(tmp_path: Path) -> None:
    model = _bn_model(tmp_path / "m", None)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    fused = inference_module(model.module)
    assert fused is not model.module
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(7, 3, 96, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(fused(x).numpy(), model.module(x).numpy(), rtol=1e-4, atol=1e-5)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.module.modules())


def test_untraceable_module_is_used_as_is() -> None:
    class DataDependent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            return y.mean((1, 2, 3)) if float(x.sum()) > 0 else -y.mean((1, 2, 3))

    module = DataDependent()
    assert inference_module(module) is module


@pytest.mark.parametrize("center_crop", [None, 64, 48])
def test_engine_matches_predict_proba(tmp_path: Path, center_crop: int | None) -> None:
    model = _bn_model(tmp_path / "m", center_crop)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(96 * 4, 96 * 5, 3), dtype=np.uint8)

    def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
        return image[row0 * 96 : (row0 + n_rows) * 96, col0 * 96 : (col0 + n_cols) * 96]

    cells = np.argwhere(np.ones((4, 5), bool))
    engine = TileInference(model, batch_size=6, num_readers=2, block_tiles=2)
    probs = engine.run(cells, read_block, 96, 96).probs
    tiles = np.stack([image[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] for r, c in cells])
    expected = model.predict_proba(tiles)
    assert expected.std() > 1e-3
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_untraceable_submodule_is_kept_and_the_rest_folded() -> None:
    class ShapePool(torch.nn.Module):  # Python control flow on shapes: fx cannot trace it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.shape[-1]
            k = min(2, h)
            return x[..., :k, :k].mean((-2, -1))

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), ShapePool(), torch.nn.Linear(8, 1)
    ).eval()
    module[1].running_var.uniform_(0.5, 2.0)
    fused = inference_module(module)
    assert fused is not module
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, ShapePool) for m in fused.modules())
    x = torch.randn(4, 3, 12, 12)
    with torch.inference_mode():
        np.testing.assert_allclose(fused(x).numpy(), module(x).numpy(), rtol=1e-4, atol=1e-5)
