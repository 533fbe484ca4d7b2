"""The engine's CPU module in the fast form: traced (under the chosen precision's autocast, so bf16
casts are part of the graph) and ``torch.jit.freeze``-d (weights as constants, conv + bias folding,
oneDNN fusions). Measured in the engine on this project's AMD EPYC (benchmarks/dense_speed.py,
four runs): dense passes 0.89-1.32x of eager, 32-tile batches 0.57-0.77x (slower end to end, though
equal when timed alone), so the engine runs eager unless asked
(``TileInference.freeze="dense"|"always"``).
``torch.jit.optimize_for_inference`` on top brought nothing consistent here.

The traced graph is checked against the eager module on the probe input and on a second input of
another size (batch, or region side for dense calls), in probability against the eager fp32 module;
any failure to trace, a tracer warning that data steered Python control flow, or a difference above
:data:`MAX_FP32_PROB_DIFF` (fp32; 0.01 for a bf16 graph) keeps the eager module.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch

from wsi_pipeline.precision import MAX_PROB_DIFF

#: Largest probability difference from the eager fp32 module accepted for a frozen fp32 graph; a
#: graph traced under bf16 autocast must stay within MAX_PROB_DIFF (0.01) of it, as eager bf16 must.
MAX_FP32_PROB_DIFF = 1e-4

Forward = Callable[[torch.Tensor], torch.Tensor]


class _DenseCall(torch.nn.Module):
    """``module.dense`` as ``forward`` (what tracing records)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.dense(x)  # type: ignore[operator]


def frozen_forward(
    module: torch.nn.Module,
    example: torch.Tensor,
    dense: bool,
    autocast: contextlib.AbstractContextManager[object] | None = None,
    reduced: bool = False,
) -> tuple[Forward, bool]:
    """``(forward, frozen)``: the frozen graph of ``module`` (``module.dense`` when ``dense``) for inputs
    like ``example``, traced under ``autocast`` (``reduced``: a bf16/fp16 one), or the eager call
    when it cannot be frozen faithfully."""
    eager: torch.nn.Module = _DenseCall(module).eval() if dense else module.eval()
    if example.device.type != "cpu":
        return eager, False
    # a second shape: one tile fewer, or a region one output cell smaller on each side
    other = example[:-1] if not dense and len(example) > 1 else example
    if dense and min(example.shape[-2:]) > getattr(module, "dense_tile", 96) + 16:
        step = int(getattr(module, "dense_stride", 16))
        other = example[..., step:, step:]
    try:
        with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
            warnings.simplefilter("always")
            with autocast or contextlib.nullcontext():
                graph = torch.jit.freeze(torch.jit.trace(eager, example, check_trace=False))
            if any(_data_dependent(w.message) for w in caught):
                return eager, False
        tolerance = MAX_PROB_DIFF if reduced else MAX_FP32_PROB_DIFF
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            for x in (example, other, other):  # twice: the profiling executor optimises on reruns
                with autocast or contextlib.nullcontext():
                    got = torch.sigmoid(graph(x).float())
                diff = float((got - torch.sigmoid(eager(x).float())).abs().max())
                if not diff <= tolerance:
                    return eager, False
    except Exception:  # not traceable (data-dependent control flow, ...): run it eagerly
        return eager, False
    return graph, True


def _data_dependent(message: Warning | str) -> bool:
    """A tracer warning that a tensor's value steered Python code (a branch on data): the trace holds
    one branch only. Shape-dependent code is covered by the second-shape check instead."""
    text = str(message)
    return isinstance(message, torch.jit.TracerWarning) and (
        "Python boolean" in text or "Python number" in text or "Python float" in text
    )
