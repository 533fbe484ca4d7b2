"""Deterministic stand-in architectures whose output is a known function of the input.

They are real ``nn.Module``s, saved and loaded with :func:`~wsi_pipeline.models.save_model`
like any trained model, so tests can check every heatmap cell of a slide against the
pixels the cell covers (catching off-by-one, level and um/px errors).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wsi_pipeline.models.registry import register_model


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


@register_model("mean_intensity_probe")
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
