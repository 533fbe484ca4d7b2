"""Reruns are bit-identical whatever the number of reader threads (issue 11, item 7): blocks reach the
model in plan order, so batch composition never depends on which reader finishes first."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import save_small_bn_model

from wsi_pipeline.inference import TileInference
from wsi_pipeline.models import ModelConfig, load_model
from wsi_pipeline.models.io import LoadedModel
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import read_heatmap_zarr
from wsi_pipeline.pipeline import run_slide
from wsi_pipeline.testing import write_pyramidal_tiff


class BatchDependent(torch.nn.Module):
    """A tile's logit plus a term from the whole batch: any change of batch composition shows (as
    oneDNN's batch-size-dependent kernels do, at the 1e-9 level)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = x.mean((1, 2, 3))
        return (self.scale * (own + 0.1 * own.mean())).reshape(-1, 1)


def test_values_do_not_depend_on_reader_timing(tmp_path: Path) -> None:
    model = LoadedModel(BatchDependent().eval(), ModelConfig(architecture="probe"), tmp_path, "0" * 64)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(16 * 40, 16 * 40, 3), dtype=np.uint8)
    delays = np.random.default_rng(1)

    def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
        time.sleep(float(delays.uniform(0, 0.01)))  # readers finish in a random order
        return image[row0 * 16 : (row0 + n_rows) * 16, col0 * 16 : (col0 + n_cols) * 16]

    cells = np.argwhere(rng.random((40, 40)) < 0.7)
    runs = [
        TileInference(model, batch_size=37, num_readers=n, block_tiles=4).run(cells, read_block, 16, 16).probs
        for n in (1, 3, 3)
    ]
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()


@pytest.mark.parametrize("stride", [48, 96])
def test_heatmap_bytes_equal_with_1_and_3_readers(tmp_path: Path, stride: int) -> None:
    model = load_model(save_small_bn_model(tmp_path / "m"))
    rng = np.random.default_rng(2)
    image = np.full((1152, 1152, 3), 255, dtype=np.uint8)
    image[96:1056, 96:1056] = rng.integers(60, 230, size=(960, 960, 3), dtype=np.uint8)
    slide = write_pyramidal_tiff(tmp_path / "s.tif", image, mpp=0.972, levels=2)
    heatmaps = []
    for n in (1, 3):
        options = InferenceOptions(
            stride=stride, num_readers=n, batch_size=50, precision="fp32", viewer=False
        )
        result = run_slide(slide, tmp_path / f"out{n}", options, model)
        heatmaps.append(read_heatmap_zarr(result.out_dir / "heatmap.zarr")[0])
    assert np.isfinite(heatmaps[0]).sum() > 50
    assert heatmaps[0].tobytes() == heatmaps[1].tobytes()
