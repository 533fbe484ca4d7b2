"""Batched training augmentation on float tensors ``(N, 3, H, W)`` in [0, 1] (any device).

- the 8 dihedral views (4 rotations x optional flip, :mod:`wsi_pipeline.d4`), chosen per sample;
- colour jitter in HSV space (hue shift, saturation and value scaling);
- stain augmentation in HED space (per-channel scale and shift of the optical densities);
- random crops whose centre stays near the patch centre (the label lives in the centre 32 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wsi_pipeline.d4 import NHWC, random_dihedral
from wsi_pipeline.errors import OptionError
from wsi_pipeline.hed import stain_transform
from wsi_pipeline.models.preprocess import patches_to_float


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> HSV with all channels in [0, 1]."""
    r, g, b = rgb.unbind(1)
    maxc, argmax = rgb.max(1)
    minc = rgb.min(1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(
        argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    s = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(1)
    h6 = (h % 1.0) * 6.0
    k = torch.stack([(5 + h6) % 6, (3 + h6) % 6, (1 + h6) % 6], 1)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * f


def _uniform(
    n: int, spread: float, centre: float, ref: torch.Tensor, gen: torch.Generator | None
) -> torch.Tensor:
    u = torch.rand(n, generator=gen, device="cpu").to(ref.device, ref.dtype)
    return (centre + (2 * u - 1) * spread).view(n, 1, 1)


def hsv_jitter(
    x: torch.Tensor,
    hue: float = 0.04,
    saturation: float = 0.25,
    value: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample random hue shift (+-hue of a turn), saturation and value scaling (x(1+-s))."""
    n = x.shape[0]
    h, s, v = rgb_to_hsv(x).unbind(1)
    h = h + _uniform(n, hue, 0.0, x, generator)
    s = (s * _uniform(n, saturation, 1.0, x, generator)).clamp(0, 1)
    v = (v * _uniform(n, value, 1.0, x, generator)).clamp(0, 1)
    return hsv_to_rgb(torch.stack([h, s, v], 1)).clamp(0, 1)


def hed_jitter(
    x: torch.Tensor, scale: float = 0.05, shift: float = 0.05, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Stain augmentation: per sample and stain, ``c * U(1-scale, 1+scale) + U(-shift, shift)``
    applied to the haematoxylin, eosin and DAB concentrations, then back to RGB.

    Colour deconvolution is linear in optical density, so the whole change is one per-sample
    3x3 matrix and offset on the optical densities (one batched matmul)."""
    n = x.shape[0]
    alpha = torch.stack([_uniform(n, scale, 1.0, x, generator) for _ in range(3)], 1).reshape(n, 3)
    beta = torch.stack([_uniform(n, shift, 0.0, x, generator) for _ in range(3)], 1).reshape(n, 3)
    return stain_transform(x, alpha, beta)


def random_crop_nhwc(
    x: torch.Tensor, size: int, jitter: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample crop of ``size`` px from ``(N, H, W, C)`` whose offset is the centred one
    +- ``jitter`` px (``jitter=0``: centre crop). Works on uint8 or float."""
    n, h, w = x.shape[:3]
    if size > min(h, w):
        raise ValueError(f"crop {size} larger than patch {h}x{w}")
    top0, left0 = (h - size) // 2, (w - size) // 2
    jitter = max(0, min(jitter, top0, left0, h - size - top0, w - size - left0))
    if jitter == 0:
        return x[:, top0 : top0 + size, left0 : left0 + size]
    dy = torch.randint(-jitter, jitter + 1, (n,), generator=generator, device="cpu").to(x.device)
    dx = torch.randint(-jitter, jitter + 1, (n,), generator=generator, device="cpu").to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (top0 + dy)[:, None] + ar[None, :]
    cols = (left0 + dx)[:, None] + ar[None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x[batch, rows[:, :, None], cols[:, None, :]]


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample translation of ``(N, C, H, W)`` by integers in ``[-shift, shift]`` along each axis,
    the uncovered border filled by reflection (tissue continues; no black or white bars)."""
    h, w = x.shape[-2:]
    shift = max(0, min(int(shift), h - 1, w - 1))
    if shift == 0:
        return x
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="reflect")
    moved = random_crop_nhwc(padded.permute(0, 2, 3, 1), h, shift, generator)
    return moved.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


@dataclass
class AugmentSettings:
    """What :class:`Augmenter` does; all off gives the identity."""

    dihedral: bool = True
    hsv: bool = False
    hue: float = 0.04
    saturation: float = 0.25
    value: float = 0.2
    hed: bool = False
    hed_scale: float = 0.05
    hed_shift: float = 0.05
    #: Translate each patch by up to +-``shift`` px in x and y (reflected at the border); 0: off.
    shift: int = 0

    def __post_init__(self) -> None:
        """:class:`~wsi_pipeline.errors.OptionError` naming the first bad setting (a config file's typo
        must not train silently with nonsense, or fail deep inside the first batch)."""
        for name in ("dihedral", "hsv", "hed"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"augment.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("hue", "saturation", "value", "hed_scale", "hed_shift"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value >= 0):
                raise OptionError(f"augment.{name} must be a number >= 0, got {value!r}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise OptionError(f"augment.shift must be a whole number of pixels >= 0, got {self.shift!r}")


class Augmenter:
    """Applies the enabled augmentations to float ``(N, 3, H, W)`` batches in [0, 1]."""

    def __init__(self, settings: AugmentSettings, seed: int = 0) -> None:
        self.settings = settings
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.settings.dihedral:
            x = random_dihedral(x, self.generator)
        return self._after_views(x)

    def patches(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC patches -> augmented float NCHW in [0, 1]: the same as
        ``self(patches_to_float(patches))``, with the dihedral views taken on the uint8 pixels (a
        quarter of the bytes to move; the training path)."""
        if self.settings.dihedral:
            patches = random_dihedral(patches, self.generator, NHWC)
        return self._after_views(patches_to_float(patches))

    def _after_views(self, x: torch.Tensor) -> torch.Tensor:
        s, g = self.settings, self.generator
        if s.shift:
            x = random_shift(x, s.shift, g)
        if s.hed:
            x = hed_jitter(x, s.hed_scale, s.hed_shift, g)
        if s.hsv:
            x = hsv_jitter(x, s.hue, s.saturation, s.value, g)
        return x
