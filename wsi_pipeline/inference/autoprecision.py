"""The precision the engine runs a model in: :func:`wsi_pipeline.precision.choose_precision` fed with a
probe of real tiles (the first block of the slide), decided once per process, model, device, mode and
request.

``fp32``/``bf16`` are obeyed. ``auto``: fp32 on CPUs without native bf16 (AVX512-BF16/AMX); where it
is native, bf16 autocast is timed against fp32 on the probe (median of 3 after a warm-up) and chosen
only when at least :data:`~wsi_pipeline.precision.MIN_SPEEDUP` faster and its probabilities agree
with fp32's within :data:`~wsi_pipeline.precision.MAX_PROB_DIFF`; on CUDA bf16 where supported and
agreeing. The probe costs about 8 passes over a 32-tile batch (or a 320 px dense region).

A timed decision is noisy, so it is made once per machine: it is stored in
``$WSI_PIPELINE_CACHE/precision.json`` (default ``~/.cache/wsi_pipeline``) under the model's weights,
the mode (tiles/dense), the device, the CPU's name and the torch version, and later runs, batch
workers included, reuse it; reruns on one machine therefore run in the same precision and give the
same values. Delete the file to measure again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.files import user_cache_dir, write_text_atomic
from wsi_pipeline.inference.batches import CPU_MODEL_CHUNK
from wsi_pipeline.inference.dense import DensePlan
from wsi_pipeline.models.io import LoadedModel
from wsi_pipeline.precision import Precision, check_precision, choose_precision, cpu_name

#: Side (px) of the region the probe of a dense model runs on.
PROBE_REGION_PX = 320

_CACHE: dict[tuple[object, ...], Precision] = {}
_LOCK = threading.Lock()


def engine_precision(
    requested: str,
    device: torch.device,
    key: tuple[object, ...],
    forward: Callable[[torch.Tensor], torch.Tensor],
    probe: Callable[[], torch.Tensor],
    probability: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid,
) -> Precision:
    """The precision for a model (identified by ``key``) on ``device``.

    ``forward(x)`` returns logits for a model input; ``probe()`` gives that input (called only when a
    measurement is needed); ``probability`` turns logits into the probabilities the run reports (the
    model's calibration), on which fp32 and bf16 must agree. Cached for the process.
    """
    check_precision(requested)
    if requested != "auto":
        return choose_precision(requested, device, lambda p: None)
    cache_key = (*key, str(device))
    with _LOCK:
        if cache_key in _CACHE:
            return _CACHE[cache_key]
    x: list[torch.Tensor] = []

    def data() -> torch.Tensor:
        if not x:
            x.append(probe().to(device))
        return x[0]

    def run(precision: Precision) -> torch.Tensor:
        with torch.inference_mode(), precision.autocast(device):
            out = forward(data()).float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    def agree() -> float:
        fp32 = probability(run(Precision(None, "probe")))
        bf16 = probability(run(Precision(torch.bfloat16, "probe")))
        return float((fp32 - bf16).abs().max())

    stored_key = _machine_key(cache_key, device)
    chosen = _stored(stored_key)
    if chosen is None:
        chosen = choose_precision("auto", device, run, agree)
        _store(stored_key, chosen)
    with _LOCK:
        _CACHE[cache_key] = chosen
    return chosen


def precision_file() -> Path:
    """Where measured ``auto`` decisions are kept for this machine."""
    return user_cache_dir() / "precision.json"


def _machine_key(key: tuple[object, ...], device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return " | ".join([*(str(k) for k in key), where, f"torch {torch.__version__}"])


def _read_store() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(precision_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stored(key: str) -> Precision | None:
    entry = _read_store().get(key)
    if not isinstance(entry, dict) or entry.get("dtype") not in ("float32", "bfloat16"):
        return None
    dtype = torch.bfloat16 if entry["dtype"] == "bfloat16" else None
    return Precision(dtype, f"{entry.get('reason', 'measured earlier')} (decided earlier on this machine)")


def _store(key: str, precision: Precision) -> None:
    """Best effort: an unwritable cache folder only means measuring again next time."""
    with _LOCK:
        data = _read_store()
        data[key] = {"dtype": precision.name, "reason": precision.reason}
        try:
            precision_file().parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(precision_file(), json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass


def probe_input(
    model: LoadedModel,
    plan: DensePlan | None,
    pixels: np.ndarray,
    tile_px: int,
    stride_px: int,
    device: torch.device,
) -> torch.Tensor:
    """A model input cut from the first block read: :data:`CPU_MODEL_CHUNK` tiles (repeated when the
    block has fewer), or for a dense plan a region of up to :data:`PROBE_REGION_PX` px per side."""
    if plan is not None:
        side = [
            plan.tile + (min(PROBE_REGION_PX, n) - plan.tile) // plan.net_stride * plan.net_stride
            for n in pixels.shape[:2]
        ]
        batch = torch.from_numpy(np.ascontiguousarray(pixels[: side[0], : side[1]]))[None]
    else:
        views = np.lib.stride_tricks.sliding_window_view(pixels, (tile_px, tile_px, 3))
        views = views[::stride_px, ::stride_px, 0].reshape(-1, tile_px, tile_px, 3)
        reps = -(-CPU_MODEL_CHUNK // len(views))
        tiles = np.concatenate([views[:CPU_MODEL_CHUNK]] * reps)[:CPU_MODEL_CHUNK]
        batch = torch.from_numpy(np.ascontiguousarray(tiles))
    return model.preprocess(batch.to(device))


def clear_cache() -> None:
    """Forget earlier decisions, this process's and the machine's stored ones (tests, benchmarks)."""
    with _LOCK:
        _CACHE.clear()
        precision_file().unlink(missing_ok=True)
