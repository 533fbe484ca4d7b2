"""A deterministic stand-in architecture whose output is a known function of the input.

``mean_intensity_probe`` is a real ``nn.Module``, saved and loaded with
:func:`~wsi_pipeline.models.save_model` like any trained model, so tests can check every heatmap
cell of a slide against the pixels the cell covers (catching off-by-one, level and um/px errors).
It is registered only when this module is imported (``import wsi_pipeline.testing``), so it is not
offered to users by ``wsi-pipeline models``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsi_pipeline.models import LoadedModel, ModelConfig, create_model, load_model, save_model
from wsi_pipeline.models.registry import register_model

#: The probe's default weights: red minus blue.
PROBE_KWARGS = {"red": 6.0, "green": 0.0, "blue": -6.0, "bias": 0.0}


class MeanIntensityProbe(nn.Module):
    """``logit = w_r * mean(R) + w_g * mean(G) + w_b * mean(B) + bias`` over the whole input.

    With the config's mean = 0 and std = 1 the channel means are the tile's RGB means in
    [0, 1], so the tumour probability of a tile is ``sigmoid`` of a fixed linear function
    of its average colour (see :func:`probe_probability`).
    """

    def __init__(self, red: float, green: float, blue: float, bias: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(3, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[red, green, blue]], dtype=torch.float32))
            self.linear.bias.fill_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(x.float()), 1))


@register_model("mean_intensity_probe", listed=False)
def mean_intensity_probe(
    red: float = 6.0, green: float = 0.0, blue: float = -6.0, bias: float = 0.0
) -> nn.Module:
    """Stand-in 'classifier': a fixed linear function of the tile's mean colour.

    The default (red minus blue) scores pink/red tiles high and blue tiles low.
    """
    return MeanIntensityProbe(red, green, blue, bias)


def probe_probability(
    tile: np.ndarray, red: float = 6.0, green: float = 0.0, blue: float = -6.0, bias: float = 0.0
) -> float:
    """Reference value of :func:`mean_intensity_probe` for a uint8 ``(h, w, 3)`` tile
    (config mean 0, std 1, no centre crop)."""
    means = np.asarray(tile, dtype=np.float64).reshape(-1, 3).mean(axis=0) / 255.0
    logit = red * means[0] + green * means[1] + blue * means[2] + bias
    return float(1.0 / (1.0 + np.exp(-logit)))


def save_probe_model(directory: Path, patch_size: int = 32, mpp: float = 1.0, **kwargs: float) -> Path:
    """Save the deterministic ``mean_intensity_probe`` (mean 0, std 1) and return its folder."""
    arch_kwargs = {**PROBE_KWARGS, **kwargs}
    config = ModelConfig(
        architecture="mean_intensity_probe",
        arch_kwargs=arch_kwargs,
        name="probe",
        patch_size=patch_size,
        mpp=mpp,
    )
    return save_model(directory, create_model(config.architecture, **arch_kwargs), config)


def load_probe_model(directory: Path, patch_size: int = 32, mpp: float = 1.0, **kwargs: float) -> LoadedModel:
    """:func:`save_probe_model`, then load it back."""
    return load_model(save_probe_model(directory, patch_size=patch_size, mpp=mpp, **kwargs))
