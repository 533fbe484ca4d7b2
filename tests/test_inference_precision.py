"""Inference precision per machine: bf16 autocast agrees with fp32 within 0.01 in probability (tile and
dense paths), ``auto`` is decided once per process and model, bad values are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import save_dense_model, save_small_bn_model

from wsi_pipeline.errors import OptionError
from wsi_pipeline.inference import TileInference
from wsi_pipeline.inference.autoprecision import clear_cache, engine_precision
from wsi_pipeline.models import load_model
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.precision import MAX_PROB_DIFF, cpu_has_native_bf16


def _image_reader(stride: int, n: int = 10):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    image = rng.integers(40, 240, size=((n - 1) * stride + 96, (n - 1) * stride + 96, 3), dtype=np.uint8)

    def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
        y, x = row0 * stride, col0 * stride
        return image[y : y + (n_rows - 1) * stride + 96, x : x + (n_cols - 1) * stride + 96]

    return np.argwhere(np.ones((n, n), bool)), read_block


@pytest.mark.parametrize(("kind", "stride"), [("dense", 32), ("tiles", 96)])
def test_bf16_agrees_with_fp32(tmp_path: Path, kind: str, stride: int) -> None:
    folder = save_dense_model(tmp_path / "m") if kind == "dense" else save_small_bn_model(tmp_path / "m")
    model = load_model(folder)
    cells, read = _image_reader(stride)
    runs = {p: TileInference(model, precision=p).run(cells, read, 96, stride) for p in ("fp32", "bf16")}
    assert runs["bf16"].stats.precision == "bfloat16" and runs["fp32"].stats.precision == "float32"
    assert runs["bf16"].stats.mode == ("dense x1" if kind == "dense" else "tiles")
    diff = np.abs(runs["bf16"].probs - runs["fp32"].probs)
    assert 0 < diff.max() <= MAX_PROB_DIFF  # bf16 really ran, and agrees


def test_auto_is_measured_once_per_model_and_process() -> None:
    clear_cache()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    forward = lambda x: net(x).mean((1, 2, 3))  # noqa: E731
    probes: list[int] = []

    def probe() -> torch.Tensor:
        probes.append(1)
        return torch.rand(8, 3, 48, 48)

    cpu = torch.device("cpu")
    first = engine_precision("auto", cpu, ("model-a",), forward, probe)
    second = engine_precision("auto", cpu, ("model-a",), forward, probe)
    assert first == second and first.reason
    assert len(probes) == (1 if cpu_has_native_bf16() else 0)  # measured only where bf16 is native
    if first.dtype is not None:
        assert "agrees with fp32" in first.reason
    assert engine_precision("fp32", cpu, ("model-a",), forward, probe).dtype is None
    assert engine_precision("bf16", cpu, ("model-a",), forward, probe).dtype == torch.bfloat16
    clear_cache()


def test_auto_compares_the_probabilities_the_run_reports() -> None:
    """bf16 must agree with fp32 on the calibrated probabilities a run writes, not on a plain
    sigmoid of the logits: a calibration that sharpens differences makes the same net refuse bf16."""
    if not cpu_has_native_bf16():
        pytest.skip("agreement is only measured where bf16 is native")
    torch.manual_seed(0)
    net = torch.nn.Sequential(  # wide enough that native bf16 is clearly faster (3x here)
        torch.nn.Conv2d(3, 64, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 1, 1),
    )
    forward = lambda x: net(x).mean((1, 2, 3))  # noqa: E731
    cpu = torch.device("cpu")
    seen: list[torch.Tensor] = []

    def sharp(logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits)
        return torch.sigmoid((logits - logits.mean()) * 1e4)  # any rounding flips probabilities

    clear_cache()
    chosen = engine_precision("auto", cpu, ("model-c",), forward, lambda: torch.rand(16, 3, 64, 64), sharp)
    clear_cache()
    if "needs" in chosen.reason:  # bf16 measured not faster enough: agreement is never asked
        pytest.skip(f"bf16 not faster on this CPU: {chosen.reason}")
    assert seen, "agreement was not measured on the run's probabilities"
    assert chosen.dtype is None and "differ from fp32" in chosen.reason


def test_auto_decision_is_stored_for_the_machine_and_reused_by_a_new_process() -> None:
    """A timed decision is noisy: a second process (here: the in-process cache forgotten, the stored
    file kept) must reuse the first one's, so reruns run in the same precision."""
    from wsi_pipeline.inference import autoprecision

    clear_cache()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    forward = lambda x: net(x).mean((1, 2, 3))  # noqa: E731
    cpu = torch.device("cpu")
    first = engine_precision("auto", cpu, ("model-b",), forward, lambda: torch.rand(8, 3, 48, 48))
    if not cpu_has_native_bf16():
        pytest.skip("fp32 without a measurement on CPUs without native bf16: nothing to store")
    stored = json.loads(autoprecision.precision_file().read_text())
    (entry,) = [v for k, v in stored.items() if k.startswith("model-b |")]
    assert entry["dtype"] == first.name
    autoprecision._CACHE.clear()  # a new process: only the file is left

    def no_probe() -> torch.Tensor:
        raise AssertionError("measured again although the machine's decision is stored")

    again = engine_precision("auto", cpu, ("model-b",), forward, no_probe)
    assert again.dtype == first.dtype and "decided earlier on this machine" in again.reason
    clear_cache()
    assert not autoprecision.precision_file().exists()


def test_bad_precision_is_refused() -> None:
    with pytest.raises(OptionError, match="--precision"):
        InferenceOptions(precision="int4")


@pytest.mark.parametrize(("kind", "stride"), [("dense", 32), ("tiles", 96)])
def test_frozen_graph_equals_the_eager_module(tmp_path: Path, kind: str, stride: int) -> None:
    folder = save_dense_model(tmp_path / "m") if kind == "dense" else save_small_bn_model(tmp_path / "m")
    model = load_model(folder)
    cells, read = _image_reader(stride)
    default = TileInference(model, precision="fp32").run(cells, read, 96, stride)
    assert not default.stats.frozen  # eager unless asked: frozen measured no faster in the engine
    frozen = TileInference(model, precision="fp32", freeze="always").run(cells, read, 96, stride)
    eager = TileInference(model, precision="fp32", freeze="never").run(cells, read, 96, stride)
    assert frozen.stats.frozen and not eager.stats.frozen
    np.testing.assert_allclose(frozen.probs, eager.probs, atol=1e-5)
    bf16 = TileInference(model, precision="bf16", freeze="always").run(cells, read, 96, stride)
    assert bf16.stats.frozen  # traced under autocast: the graph itself runs in bf16
    assert 0 < np.abs(bf16.probs - eager.probs).max() <= MAX_PROB_DIFF


def test_untraceable_module_runs_eagerly() -> None:
    from wsi_pipeline.inference.frozen import frozen_forward

    class DataDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((1, 2, 3)) if float(x.sum()) > 0 else -x.mean((1, 2, 3))

    module = DataDependent()
    forward, frozen = frozen_forward(module, -torch.rand(4, 3, 8, 8), dense=False)
    assert not frozen and forward is module
