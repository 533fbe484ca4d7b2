"""Colour deconvolution into haematoxylin, eosin and DAB (Ruifrok & Johnston): the one home for
stain-space maths used by stain augmentation (training), re-stained evaluation and stain statistics.

Works on float ``(N, 3, H, W)`` RGB in [0, 1] (any device). Optical density is ``-log(max(x, 1/255))``;
stain concentrations are optical densities times :data:`HED_FROM_RGB`. Scaling concentrations leaves
white (zero optical density) white.
"""

from __future__ import annotations

import torch

#: RGB <- HED stain vectors (Ruifrok & Johnston), rows: haematoxylin, eosin, DAB.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
RGB_FROM_HED = RGB_FROM_HED / RGB_FROM_HED.norm(dim=1, keepdim=True)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
OD_EPS = 1.0 / 255.0


def optical_density(x: torch.Tensor) -> torch.Tensor:
    return -torch.log(x.clamp_min(OD_EPS))


def rgb_to_hed(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HED stain concentrations."""
    return torch.einsum("nchw,cd->ndhw", optical_density(x), HED_FROM_RGB.to(x.device, x.dtype))


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    od = torch.einsum("nchw,cd->ndhw", hed, RGB_FROM_HED.to(hed.device, hed.dtype))
    return torch.exp(-od).clamp(0, 1)


def stain_transform(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample ``concentration * scale + shift`` for each of the 3 stains, back to RGB.

    ``scale`` and ``shift`` are ``(N, 3)`` (or ``(3,)`` for the whole batch). Deconvolution is linear
    in optical density, so the change is one 3x3 matrix (and offset) per sample: one batched matmul.
    """
    n, c, h, w = x.shape
    to_hed, to_rgb = HED_FROM_RGB.to(x.device, x.dtype), RGB_FROM_HED.to(x.device, x.dtype)
    scale = scale.to(x.device, x.dtype).expand(n, 3)
    mix = to_hed[None] @ (scale[:, :, None] * to_rgb[None])  # od_row' = od_row @ to_hed @ diag(s) @ to_rgb
    od = optical_density(x).reshape(n, c, h * w)
    if shift is None:
        od = torch.bmm(mix.transpose(1, 2), od)
    else:
        offset = shift.to(x.device, x.dtype).expand(n, 3) @ to_rgb
        od = torch.baddbmm(offset[:, :, None], mix.transpose(1, 2), od)
    return torch.exp(-od).clamp_(0, 1).reshape(n, c, h, w)
