"""Precision is chosen per machine at run time: fp32 unless native bf16 measures faster."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from wsi_pipeline import precision as prec
from wsi_pipeline.errors import OptionError


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    assert not prec.cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f"))
    assert prec.cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert prec.cpu_has_native_bf16(_cpuinfo(tmp_path, "amx_tile amx_bf16"))
    assert not prec.cpu_has_native_bf16(tmp_path / "missing")


def test_cpu_name_is_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu avx2\n")
    assert prec.cpu_name(info) == "AMD EPYC 9B45"
    assert prec.cpu_name(tmp_path / "missing")  # falls back to what platform knows, never empty


def test_auto_on_a_cpu_without_native_bf16_is_fp32_without_measuring(monkeypatch) -> None:
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda *a: False)
    calls = []
    chosen = prec.choose_precision("auto", torch.device("cpu"), calls.append)
    assert chosen.dtype is None and calls == [] and "without native bf16" in chosen.reason


@pytest.mark.parametrize(("bf16_seconds", "expected"), [(0.001, torch.bfloat16), (0.02, None)])
def test_auto_with_native_bf16_keeps_the_faster(monkeypatch, bf16_seconds: float, expected) -> None:
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda *a: True)

    def run(p: prec.Precision) -> None:
        time.sleep(bf16_seconds if p.dtype is torch.bfloat16 else 0.01)

    chosen = prec.choose_precision("auto", torch.device("cpu"), run)
    assert chosen.dtype is expected and "measured" in chosen.reason


def test_inference_keeps_fp32_when_bf16_disagrees(monkeypatch) -> None:
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda *a: True)

    def run(p: prec.Precision) -> None:
        time.sleep(0.001 if p.dtype is torch.bfloat16 else 0.01)

    assert (
        prec.choose_precision("auto", torch.device("cpu"), run, agree=lambda: 0.002).dtype is torch.bfloat16
    )
    chosen = prec.choose_precision("auto", torch.device("cpu"), run, agree=lambda: 0.05)
    assert chosen.dtype is None and "differ" in chosen.reason
    assert prec.choose_precision("auto", torch.device("cpu"), run, agree=lambda: float("nan")).dtype is None


def test_explicit_choices_are_obeyed_and_bad_ones_refused() -> None:
    assert prec.choose_precision("fp32", torch.device("cpu"), lambda p: None).name == "float32"
    assert prec.choose_precision("bf16", torch.device("cpu"), lambda p: None).name == "bfloat16"
    with pytest.raises(OptionError, match="precision must be"):
        prec.choose_precision("fp8", torch.device("cpu"), lambda p: None)
