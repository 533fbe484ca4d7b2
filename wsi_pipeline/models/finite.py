"""The one NaN/infinity guard of models: weights checked on save and load, outputs before use.

A diverged or broken model gives NaN probabilities; every comparison with NaN is false, so left
unchecked they read as "no tumour" (slides) or as a wrong-class prediction (patches). Saving,
loading, slide inference and patch evaluation all refuse them here instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from wsi_pipeline.errors import NonFiniteOutputError

_SHOWN = 3


def non_finite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [
        name
        for name, tensor in named
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def describe_names(names: list[str]) -> str:
    """``a, b, c (+2 more)``."""
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def check_finite_outputs(values: np.ndarray, source: str, unit: str) -> None:
    """:class:`NonFiniteOutputError` ``"<source>: ..."`` when any of ``values`` (a model's
    probabilities for ``unit`` items: tiles, patches) is NaN or infinite."""
    values = np.asarray(values)
    bad = ~np.isfinite(values)
    if bad.any():
        n_nan = int(np.isnan(values).sum())
        kinds = "NaN" if n_nan == int(bad.sum()) else ("infinite" if n_nan == 0 else "NaN or infinite")
        raise NonFiniteOutputError(
            f"{source}: model output is not finite ({kinds}) for {int(bad.sum())} of {values.size} "
            f"{unit}; the model is broken (diverged training or damaged weights), no result written"
        )
