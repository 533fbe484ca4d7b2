"""Numeric precision per machine: bf16 autocast where the hardware has it natively and it measures
faster (and, for inference, agrees with fp32), fp32 elsewhere. Decided at run time, never
hard-coded: on CPUs without native bf16 (e.g. AVX2-only) bf16 runs several times slower than fp32,
on CPUs with AVX512-BF16/AMX it is faster."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from wsi_pipeline.errors import OptionError

PRECISIONS = ("auto", "fp32", "bf16")
#: bf16 must beat fp32 by this factor to be chosen (measurements on shared machines are noisy).
MIN_SPEEDUP = 1.1
#: Largest probability difference from fp32 that inference in bf16 may show on the probe batch.
MAX_PROB_DIFF = 0.01
_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (``None``: plain fp32) and why it was chosen."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).replace("torch.", "")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def as_dict(self) -> dict[str, str]:
        return {"precision": self.name, "precision_reason": self.reason}


FP32 = Precision(None, "requested")


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` knows), for figures
    and for keying per-machine decisions."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU flags list AVX512-BF16 or AMX-BF16 (Linux; other systems: False)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(flag in flags for flag in _CPU_FLAGS)
    return False


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def choose_precision(
    requested: str,
    device: torch.device,
    run: Callable[[Precision], object],
    agree: Callable[[], float] | None = None,
    repeats: int = 3,
) -> Precision:
    """Pick fp32 or bf16 for ``device``.

    ``run(precision)`` performs one representative unit of work (a training step, a forward pass);
    ``agree()`` (inference only) returns the largest fp32-vs-bf16 probability difference on a probe
    batch. ``requested``: ``fp32``/``bf16`` are obeyed; ``auto`` measures.
    """
    check_precision(requested)
    bf16 = Precision(torch.bfloat16, "requested")
    if requested == "fp32":
        return FP32
    if requested == "bf16":
        return bf16
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            return Precision(None, "GPU without bf16 support")
        candidate = Precision(torch.bfloat16, "CUDA with bf16")
        return _agreeing(candidate, agree)
    if device.type != "cpu" or not cpu_has_native_bf16():
        return Precision(None, "CPU without native bf16 (no AVX512-BF16/AMX)")
    fp32_s = _median_seconds(lambda: run(FP32), repeats)
    bf16_s = _median_seconds(lambda: run(bf16), repeats)
    speedup = fp32_s / max(bf16_s, 1e-12)
    if speedup < MIN_SPEEDUP:
        return Precision(None, f"native bf16 measured {speedup:.2f}x fp32 (needs {MIN_SPEEDUP}x)")
    return _agreeing(
        Precision(torch.bfloat16, f"native bf16 measured {speedup:.2f}x faster than fp32"), agree
    )


def _agreeing(candidate: Precision, agree: Callable[[], float] | None) -> Precision:
    if agree is None:
        return candidate
    diff = agree()
    if not diff <= MAX_PROB_DIFF:  # also catches NaN
        return Precision(None, f"bf16 probabilities differ from fp32 by {diff:.3g} (> {MAX_PROB_DIFF})")
    return Precision(candidate.dtype, f"{candidate.reason}; agrees with fp32 within {diff:.2g}")


@contextlib.contextmanager
def no_grad_eval(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` in eval mode under inference_mode, training mode restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield module
    finally:
        module.train(was_training)
