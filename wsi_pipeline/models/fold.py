"""BatchNorm folded into the preceding convolutions (for inference copies of patch models)."""

from __future__ import annotations

import copy

import torch


def fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """An inference copy of ``module``: eval mode, each Conv+BatchNorm pair folded into one Conv
    (``torch.fx``; removes a memory-bound pass per layer, outputs change by float rounding only),
    channels-last. Submodules that cannot be traced symbolically (e.g. shape-dependent pooling) are
    kept whole; the module itself (never modified) is returned when nothing can be traced."""
    from torch.fx.experimental.optimization import fuse

    module.eval()
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return module
    try:
        copy_ = copy.deepcopy(module)
        tracer = _LeafTracer(_untraceable_modules(copy_))
        graph_module = torch.fx.GraphModule(copy_, tracer.trace(copy_))
        fused = fuse(graph_module, inplace=True, no_trace=True)
    except Exception:  # not symbolically traceable (data-dependent control flow at the top, ...)
        return module
    return fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack it


class _LeafTracer(torch.fx.Tracer):
    """fx tracer that keeps the given submodules as opaque calls."""

    def __init__(self, leaves: set[int]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, module_qualified_name)


def _untraceable_modules(module: torch.nn.Module) -> set[int]:
    """ids of the custom submodules that fx cannot trace on their own."""
    leaves: set[int] = set()
    for sub in module.modules():
        if sub is module or type(sub).__module__.startswith("torch.nn"):
            continue
        try:
            torch.fx.symbolic_trace(sub)
        except Exception:
            leaves.add(id(sub))
    return leaves
