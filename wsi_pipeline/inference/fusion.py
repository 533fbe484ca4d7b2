"""The inference copy of a patch model that the engine runs."""

from __future__ import annotations

import torch

from wsi_pipeline.models.fold import fold_batchnorm


def inference_module(module: torch.nn.Module) -> torch.nn.Module:
    """``module.inference_copy()`` when the model provides one (e.g. group convolutions expanded into
    plain ones, dense-capable models keeping their ``dense`` method), else :func:`fold_batchnorm`:
    eval mode, BatchNorm folded into the convolutions, channels-last. ``module`` is never modified."""
    module.eval()
    make_copy = getattr(module, "inference_copy", None)
    if callable(make_copy):
        return make_copy().to(memory_format=torch.channels_last)
    return fold_batchnorm(module)
