"""The one preprocessing of patches for a model, shared by serving, evaluation and export.

uint8 ``(N, H, W, 3)`` RGB -> float ``(N, 3, h, w)``: scaled to [0, 1], stain-normalised (when the
model config holds a fitted normaliser), centre-cropped (``center_crop``), then ``(x - mean) / std``.
"""

from __future__ import annotations

import torch

from wsi_pipeline.errors import ModelError
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.stain import normalizer_from_dict


def patches_to_float(patches: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC RGB (any device) -> float NCHW in [0, 1]."""
    if patches.ndim != 4 or patches.shape[-1] != 3:
        raise ModelError(f"expected patches of shape (N, H, W, 3), got {tuple(patches.shape)}")
    return patches.permute(0, 3, 1, 2).float().div_(255.0)


def normalise_float(x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """float NCHW in [0, 1] -> the network's input: stain-normalised (if configured), centre-cropped,
    ``(x - mean) / std``, channels-last. Training calls it after augmentation, serving directly, so
    the two cannot drift apart."""
    if config.stain_normalization:  # fitted at training time, applied to the whole patch
        x = normalizer_from_dict(config.stain_normalization).normalize(x)
    if config.center_crop:
        h, w = x.shape[-2:]
        c = config.center_crop
        top, left = (h - c) // 2, (w - c) // 2
        x = x[..., top : top + c, left : left + c]
    mean = torch.tensor(config.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def preprocess_patches(patches: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """uint8 NHWC RGB -> the network's input: :func:`patches_to_float`, then :func:`normalise_float`."""
    return normalise_float(patches_to_float(patches), config)
