"""Registered patch architectures: output shape, size, cost and save/load round trip.

The contract tests run for every architecture in the registry, so a new one is tested as soon as
its module registers it.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from wsi_pipeline.errors import UnknownArchitectureError
from wsi_pipeline.inference import inference_module
from wsi_pipeline.models import ModelConfig, create_model, list_models, load_model, save_model
from wsi_pipeline.models.registry import model_builder

#: Arguments for registered architectures that cannot be built from their defaults alone.
REQUIRED_KWARGS: dict[str, dict] = {
    "ensemble": {"members": [{"architecture": "context_cnn", "arch_kwargs": {"widths": [4, 8]}}] * 2},
}
ARCHITECTURES = list_models(include_unlisted=True)  # the built-ins and the test probe (conftest imports it)


def _kwargs(name: str, size: int) -> dict:
    kwargs = dict(REQUIRED_KWARGS.get(name, {}))
    if "input_size" in inspect.signature(model_builder(name)).parameters:
        kwargs["input_size"] = size
    return kwargs


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _flops(model: torch.nn.Module, size: int) -> int:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def test_registry_lists_the_built_in_models() -> None:
    assert {"seed_cnn", "tiny_resnet", "context_cnn", "ensemble"} <= set(list_models())
    # registered by importing wsi_pipeline.testing, but a test stand-in that `wsi-pipeline models` hides
    assert "mean_intensity_probe" in list_models(include_unlisted=True)
    assert "mean_intensity_probe" not in list_models()


def test_registry_holds_only_the_built_ins_until_a_module_registers_more() -> None:
    """A fresh ``wsi-pipeline models`` lists the shipped architectures, not the test probe."""
    done = subprocess.run(
        [sys.executable, "-c", "from wsi_pipeline.cli.main import main; main()", "models"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["context_cnn", "dense_cnn", "ensemble", "seed_cnn", "tiny_resnet"]


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("size", [96, 64, 32])
def test_one_logit_per_patch(name: str, size: int) -> None:
    model = create_model(name, **_kwargs(name, size))
    model.eval()
    tile = getattr(model, "dense_tile", None)
    if tile is not None and size != tile:  # dense-capable models are built for one tile size
        with pytest.raises(ValueError, match="px tiles"):
            model(torch.rand(3, 3, size, size))
        return
    with torch.no_grad():
        out = model(torch.rand(3, 3, size, size))
    assert out.shape == (3, 1)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_saves_loads_and_folds_batchnorm(name: str, tmp_path) -> None:
    """Saved and loaded it predicts what the module does; the engine's fused copy agrees."""
    torch.manual_seed(0)
    kwargs = _kwargs(name, 96)
    module = create_model(name, **kwargs).eval()
    for m in module.modules():  # non-trivial BatchNorm statistics, so folding is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    loaded = load_model(
        save_model(tmp_path / name, module, ModelConfig(architecture=name, arch_kwargs=kwargs))
    )
    patches = np.random.default_rng(1).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        expected = torch.sigmoid(module(x)).reshape(-1).numpy()
        fused = inference_module(loaded.module)(x.contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(loaded.predict_proba(patches), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(torch.sigmoid(fused).reshape(-1).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_seed_cnn_matches_the_study_size() -> None:
    model = create_model("seed_cnn")
    assert 2.1e6 < _params(model) < 2.5e6
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted({c.out_channels for c in convs}) == [32, 64, 128]
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.modules())
    assert 1.0e9 < _flops(model, 96) < 1.4e9


def test_tiny_resnet_is_much_cheaper_than_seed_cnn() -> None:
    seed, tiny = create_model("seed_cnn"), create_model("tiny_resnet")
    assert _params(tiny) < 0.6 * _params(seed)
    # The shipped default runs the small ResNet on the centre 64 px: > 10x fewer FLOPs per tile.
    assert _flops(tiny, 64) * 10 < _flops(seed, 96)
    assert _flops(tiny, 96) * 5 < _flops(seed, 96)


def test_context_cnn_sees_the_whole_patch_at_a_twentieth_of_the_cost() -> None:
    seed, ctx = create_model("seed_cnn"), create_model("context_cnn")
    assert _params(ctx) < 0.2 * _params(seed)
    assert _flops(ctx, 96) * 15 < _flops(seed, 96)
    # Every input pixel reaches the logit: changing a corner pixel changes the output. (A random
    # input keeps units active; an all-zero one leaves every ReLU at 0 and the result up to chance.)
    torch.manual_seed(0)
    ctx = create_model("context_cnn").eval()
    x = torch.randn(1, 3, 96, 96)
    y = x.clone()
    y[..., 0, 0] += 5.0
    with torch.no_grad():
        assert (ctx(x) - ctx(y)).abs().item() > 1e-9  # tiny (random init) but not zero


def test_context_cnn_conv_stem_sees_full_resolution_detail() -> None:
    """The average-pooling stem cannot tell a 2x2 checkerboard from flat grey; the learned one can."""
    flat = torch.full((1, 3, 96, 96), 0.5)
    checker = flat.clone()
    checker[..., ::2, ::2] = 1.0
    checker[..., 1::2, 1::2] = 1.0
    checker[..., ::2, 1::2] = 0.0
    checker[..., 1::2, ::2] = 0.0
    for stem, differs in (("avg", False), ("conv", True)):
        torch.manual_seed(0)
        model = create_model("context_cnn", widths=[8, 16], stem=stem).eval()
        with torch.no_grad():
            assert model(flat).shape == (1, 1)
            assert (not torch.allclose(model(flat), model(checker), atol=1e-6)) is differs
    with pytest.raises(ValueError, match="stem"):
        create_model("context_cnn", stem="max")


def test_tiny_resnet_width_and_depth_options() -> None:
    small = create_model("tiny_resnet", widths=[8, 16, 32, 64])
    deeper = create_model("tiny_resnet", widths=[8, 16, 32, 64], blocks=[1, 2, 2])
    assert _params(small) < _params(deeper)
    with pytest.raises(ValueError, match="blocks"):
        create_model("tiny_resnet", widths=[8, 16, 32], blocks=[1, 1, 1])


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(UnknownArchitectureError, match="no_such_net.*tiny_resnet"):
        create_model("no_such_net")


def test_tiny_resnet_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny_resnet", widths=[8, 16, 32, 64]).eval()
    cfg = ModelConfig(architecture="tiny_resnet", arch_kwargs={"widths": [8, 16, 32, 64]}, center_crop=64)
    save_model(tmp_path / "m", model, cfg)
    loaded = load_model(tmp_path / "m")
    patches = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        x = torch.from_numpy(patches).permute(0, 3, 1, 2).float()[:, :, 16:80, 16:80] / 255.0
        expected = torch.sigmoid(model(x)).reshape(-1).numpy()
    np.testing.assert_allclose(loaded.predict_proba(patches), expected, rtol=1e-4, atol=1e-5)


_NARROW_TRAINING_STEPS = """
import torch
from wsi_pipeline.models import create_model
torch.set_num_threads(1)
model = create_model("tiny_resnet", widths=[4, 8, 8, 16]).to(memory_format=torch.channels_last)
x = torch.randn(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
for _ in range(30):
    model(x).sum().backward()
print("ok")
"""


def test_narrow_tiny_resnet_trains_channels_last_without_crashing() -> None:
    """Reproduces a crash ("double free or corruption", SIGABRT) on an AVX2-only AMD EPYC: oneDNN's
    weight gradient of a strided 1x1 conv with 4 input channels, channels-last, corrupts the heap.
    Run in a subprocess so that a crash fails this test instead of killing the suite."""
    done = subprocess.run([sys.executable, "-c", _NARROW_TRAINING_STEPS], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_strided_shortcut_equals_a_strided_1x1_conv_with_the_same_weights() -> None:
    """The shortcut subsamples and then runs a stride-1 1x1 conv: the function (and the state-dict
    keys) of the strided 1x1 conv it replaces, so models saved before load and score the same."""
    torch.manual_seed(0)
    model = create_model("tiny_resnet", widths=[4, 8, 8, 16]).eval()
    blocks = [m for m in model.modules() if getattr(m, "stride", 1) == 2 and hasattr(m, "shortcut")]
    assert len(blocks) == 3
    for block in blocks:
        conv, bn = block.shortcut
        x = torch.randn(2, conv.in_channels, 32, 32)
        with torch.no_grad():
            residual = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
            expected = torch.relu(residual + bn(torch.nn.functional.conv2d(x, conv.weight, stride=2)))
            torch.testing.assert_close(block(x), expected, atol=1e-6, rtol=1e-5)
    assert sum(k.endswith("shortcut.0.weight") for k in model.state_dict()) == 3


def test_saved_model_folder_has_ordinary_permissions(tmp_path) -> None:
    """Not mkdtemp's 0700: with umask 022 the folder is 0755 and its files 0644."""
    import os

    old = os.umask(0o022)
    try:
        folder = save_model(
            tmp_path / "m", create_model("context_cnn", widths=[4, 8]), ModelConfig("context_cnn")
        )
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "model.safetensors": 0o644,
        "config.json": 0o644,
    }
