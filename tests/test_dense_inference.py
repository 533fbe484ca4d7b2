"""Dense inference: every dense output equals the tile-by-tile output (within 1e-4 in probability) on real
slides and a tifffile-written mosaic; which models qualify; the model-dependent default stride."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from model_helpers import save_dense_model, save_small_bn_model

from wsi_pipeline.inference import TileInference
from wsi_pipeline.inference.dense import choose_dense, default_stride, dense_plan
from wsi_pipeline.models import load_model, save_model
from wsi_pipeline.models.io import LoadedModel
from wsi_pipeline.slide import describe_slide, open_slide
from wsi_pipeline.stages import grid_block_reader, select_tissue_cells
from wsi_pipeline.testing import build_patch_mosaic, write_pyramidal_tiff
from wsi_pipeline.tiling import plan_grid
from wsi_pipeline.tissue import detect_tissue

#: Largest |dense - tile-by-tile| allowed on probabilities (measured: ~1e-7, float rounding).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(save_dense_model(tmp_path_factory.mktemp("dense") / "model"))


def _mosaic_patches(shared: Path | None, n: int) -> np.ndarray:
    """Real PCam patches when the shared data is present, else seeded noise-on-pink patches."""
    folder = shared / "hcd_patches" / "train" if shared else None
    if folder is not None and folder.is_dir():
        from PIL import Image

        files = sorted(folder.glob("*.jpg"))[:n]
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    rng = np.random.default_rng(3)
    base = np.array([200, 120, 180], dtype=np.int16)
    return np.clip(base + rng.integers(-60, 60, size=(n, 96, 96, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    patches = _mosaic_patches(SHARED_DATA if SHARED_DATA.is_dir() else None, 30)
    layout = np.full((6, 8), -1)
    layout[1:6, 1:7] = np.arange(30).reshape(5, 6)  # glass border around the tissue
    image, _ = build_patch_mosaic(patches, np.zeros(30, int), layout)
    return write_pyramidal_tiff(tmp_path_factory.mktemp("mosaic") / "mosaic.tif", image, mpp=0.972, levels=2)


def _dense_and_tiles(model: LoadedModel, slide: Path, stride: int, mpp: float | None = None) -> tuple:
    with open_slide(slide) as reader:
        info = describe_slide(reader, mpp)
        grid = plan_grid(info, model.config.patch_size, model.config.mpp, stride)
        cells = select_tissue_cells(info, grid, detect_tissue(reader, info.mpp), 0.25)
        read = grid_block_reader(reader, grid)
        runs = {
            mode: TileInference(model, dense=mode, batch_size=64, num_readers=2).run(cells, read, 96, stride)
            for mode in ("on", "off")
        }
    return cells, runs["on"], runs["off"]


@pytest.mark.parametrize("stride", [16, 32, 48, 96, 8])
def test_dense_equals_tile_by_tile_on_a_mosaic(dense_model: LoadedModel, mosaic: Path, stride: int) -> None:
    cells, dense, tiles = _dense_and_tiles(dense_model, mosaic, stride)
    assert dense.stats.mode == ("dense x4" if stride == 8 else "dense x1")  # 8 px: shift-and-stitch
    assert tiles.stats.mode == "tiles"
    assert len(cells) > 20 and tiles.probs.std() > 1e-3  # outputs spread: a real comparison
    assert np.isfinite(dense.probs).all()
    assert float(np.abs(dense.probs - tiles.probs).max()) <= TOLERANCE


@pytest.mark.parametrize(
    ("name", "mpp", "strides"),
    [
        ("cmu1_small_pyramid_generic.tif", None, (32, 48)),
        ("cmu1_small_region.svs", None, (16, 96)),
        ("os1_detail.ome.tif", None, (32,)),
    ],
)
def test_dense_equals_tile_by_tile_on_real_slides(
    dense_model: LoadedModel, shared_data: Path, name: str, mpp: float | None, strides: tuple[int, ...]
) -> None:
    slide = shared_data / "slides" / name
    if not slide.is_file():
        pytest.skip(f"{slide} not present")
    for stride in strides:
        cells, dense, tiles = _dense_and_tiles(dense_model, slide, stride, mpp)
        assert dense.stats.mode.startswith("dense") and len(cells) > 10
        assert float(np.abs(dense.probs - tiles.probs).max()) <= TOLERANCE, (name, stride)


def test_dense_ensemble_equals_tile_by_tile(tmp_path: Path, mosaic: Path) -> None:
    from wsi_pipeline.models.ensemble import combine_models

    members = [save_dense_model(tmp_path / f"m{i}", seed=i) for i in range(2)]
    module, config = combine_models(members)
    model = load_model(save_model(tmp_path / "ens", module, config))
    assert dense_plan(model, 96, 32) is not None
    _, dense, tiles = _dense_and_tiles(model, mosaic, 32)
    assert dense.stats.mode == "dense x1"
    assert float(np.abs(dense.probs - tiles.probs).max()) <= TOLERANCE


def test_which_models_qualify(tmp_path: Path, dense_model: LoadedModel) -> None:
    plain = load_model(save_small_bn_model(tmp_path / "plain"))  # zero-padded ResNet: not dense
    assert dense_plan(plain, 96, 32) is None
    from wsi_pipeline.errors import ModelConfigError

    with pytest.raises(ModelConfigError, match="does not run on 64x64"):  # refused when loaded
        load_model(save_dense_model(tmp_path / "crop", center_crop=64))
    assert dense_plan(dense_model, 64, 32) is None  # tiles of another size than the network's
    assert choose_dense(dense_model, 96, 32, "auto") is not None
    assert choose_dense(dense_model, 96, 96, "auto") is None  # no cheaper than tile by tile: skip glass
    assert choose_dense(dense_model, 96, 96, "on") is not None
    assert choose_dense(dense_model, 96, 32, "off") is None
    assert choose_dense(dense_model, 96, 4, "auto") is not None  # 16 shifts, still far cheaper
    assert choose_dense(dense_model, 96, 88, "auto") is None  # 4 shifts of 88 px: dearer than tiles
    assert choose_dense(dense_model, 96, 80, "auto") is None  # one pass, but twice the work per area
    with pytest.raises(ValueError, match="dense mode"):
        choose_dense(dense_model, 96, 32, "always")


def test_default_stride_follows_the_model(tmp_path: Path, dense_model: LoadedModel) -> None:
    assert default_stride(dense_model.module, 96) == 32
    assert default_stride(load_model(save_small_bn_model(tmp_path / "p")).module, 96) == 96


def test_run_slide_uses_stride_32_and_dense_for_a_dense_model(
    tmp_path: Path, dense_model: LoadedModel, mosaic: Path
) -> None:
    import json

    from wsi_pipeline.options import InferenceOptions
    from wsi_pipeline.pipeline import run_slide

    result = run_slide(
        mosaic, tmp_path / "out", InferenceOptions(precision="fp32", viewer=False), dense_model
    )
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["tiles"]["stride_model_px"] == 32
    assert summary["inference"]["mode"] == "dense x1"
    assert summary["inference"]["precision"] == "float32"
    assert summary["inference"]["precision_reason"] == "requested"


def test_shipped_dense_model_qualifies_and_matches_tile_by_tile(mosaic: Path) -> None:
    """`--model dense` (real trained weights): stride 32 by default, one dense pass equal to scoring
    every tile by itself."""
    model = load_model("dense")
    assert default_stride(model.module, model.config.patch_size) == 32
    cells, dense, tiles = _dense_and_tiles(model, mosaic, 32)
    assert dense.stats.mode == "dense x1" and tiles.stats.mode == "tiles"
    assert len(cells) > 20 and tiles.probs.std() > 1e-3
    assert float(np.abs(dense.probs - tiles.probs).max()) <= TOLERANCE
