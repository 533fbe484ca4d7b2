"""Batched stain normalisation (Macenko, Reinhard) on torch tensors, for training and inference.

Both work on float ``(N, 3, H, W)`` RGB in [0, 1] on any device. A normaliser is fitted once on
reference patches (e.g. a sample of the training set), stored as a small dict in the model config
(``stain_normalization``) and rebuilt at inference with :func:`normalizer_from_dict`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from wsi_pipeline.errors import ModelConfigError, OptionError

#: The stain normalisation methods (``"method"`` of a model config's ``stain_normalization``).
STAIN_METHODS = ("macenko", "reinhard")

_IO = 255.0


def _od(x: torch.Tensor) -> torch.Tensor:
    """RGB [0, 1] -> optical density, shape kept."""
    return -torch.log((x * _IO + 1.0) / (_IO + 1.0))


class StainNormalizer(ABC):
    """Maps the colours of each patch onto a fitted reference."""

    method: str

    @abstractmethod
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``(N, 3, H, W)`` RGB in [0, 1] -> normalised, same shape, clamped to [0, 1]."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-able parameters, including ``"method"``."""

    def normalize_uint8(self, images: np.ndarray, chunk: int = 512) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> normalised uint8, in chunks (bounded memory)."""
        out = np.empty_like(images)
        for start in range(0, len(images), chunk):
            x = torch.from_numpy(images[start : start + chunk]).permute(0, 3, 1, 2).float() / 255.0
            y = self.normalize(x).mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
            out[start : start + chunk] = y.permute(0, 2, 3, 1).numpy()
        return out


# --- Macenko -------------------------------------------------------------------------------
def macenko_stains(
    od: torch.Tensor, mask: torch.Tensor, alpha: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image stain matrices from optical densities.

    ``od``: ``(N, 3, P)``; ``mask``: ``(N, P)`` bool (tissue pixels). Returns ``(N, 3, 2)`` unit
    stain vectors (haematoxylin first) and a bool ``(N,)`` telling which images had enough tissue.
    """
    w = mask.to(od.dtype)
    count = w.sum(1).clamp_min(1.0)
    mean = (od * w[:, None]).sum(2) / count[:, None]
    centred = (od - mean[:, :, None]) * w[:, None]
    cov = centred @ centred.transpose(1, 2) / count[:, None, None]
    _, vecs = torch.linalg.eigh(cov.double())  # ascending eigenvalues
    plane = vecs[:, :, 1:].to(od.dtype).flip(-1)  # (N, 3, 2): top two eigenvectors
    # Make both eigenvectors point into positive optical density.
    plane = plane * torch.where(plane.sum(1, keepdim=True) < 0, -1.0, 1.0)
    proj = plane.transpose(1, 2) @ od  # (N, 2, P)
    phi = torch.atan2(proj[:, 1], proj[:, 0])
    phi = torch.where(mask, phi, torch.full_like(phi, float("nan")))
    lo = torch.nanquantile(phi, alpha / 100.0, dim=1)
    hi = torch.nanquantile(phi, 1 - alpha / 100.0, dim=1)
    v_lo = plane @ torch.stack([torch.cos(lo), torch.sin(lo)], 1)[:, :, None]
    v_hi = plane @ torch.stack([torch.cos(hi), torch.sin(hi)], 1)[:, :, None]
    v_lo, v_hi = v_lo[..., 0], v_hi[..., 0]
    # Haematoxylin absorbs more red light than eosin: it has the larger first (R) component.
    h_first = v_lo[:, 0] >= v_hi[:, 0]
    h = torch.where(h_first[:, None], v_lo, v_hi)
    e = torch.where(h_first[:, None], v_hi, v_lo)
    stains = torch.stack([h, e], 2)
    stains = stains / stains.norm(dim=1, keepdim=True).clamp_min(1e-8)
    ok = (mask.sum(1) >= 16) & torch.isfinite(stains).all(2).all(1)
    return stains, ok


def _concentrations(od: torch.Tensor, stains: torch.Tensor) -> torch.Tensor:
    """Least-squares stain concentrations ``(N, 2, P)`` for ``od`` ``(N, 3, P)``."""
    return torch.linalg.pinv(stains) @ od


class MacenkoNormalizer(StainNormalizer):
    """Macenko et al. (2009): SVD-geodesic stain vectors, concentrations rescaled to the reference."""

    method = "macenko"

    def __init__(self, stains: Any, max_conc: Any, beta: float = 0.15, alpha: float = 1.0) -> None:
        self.stains = torch.as_tensor(stains, dtype=torch.float32).reshape(3, 2)
        self.max_conc = torch.as_tensor(max_conc, dtype=torch.float32).reshape(2)
        self.beta, self.alpha = float(beta), float(alpha)

    @classmethod
    def fit(cls, images: torch.Tensor, beta: float = 0.15, alpha: float = 1.0) -> MacenkoNormalizer:
        """Fit on float ``(N, 3, H, W)`` reference patches pooled together as one image."""
        od = _od(images).permute(1, 0, 2, 3).reshape(1, 3, -1)
        mask = (od > beta).all(1)
        stains, ok = macenko_stains(od, mask, alpha)
        if not bool(ok[0]):
            raise OptionError("macenko: reference patches hold too little stained tissue to fit")
        conc = _concentrations(od, stains)[0]
        max_conc = torch.quantile(conc[:, :: max(1, conc.shape[1] // 1_000_000)], 0.99, dim=1)
        return cls(stains[0], max_conc, beta, alpha)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        od = _od(x).reshape(n, 3, h * w)
        mask = (od > self.beta).all(1)
        stains, ok = macenko_stains(od, mask, self.alpha)
        ref_stains = self.stains.to(x.device, x.dtype)
        stains = torch.where(ok[:, None, None], stains, ref_stains)  # placeholder, result discarded
        conc = _concentrations(od, stains)
        max_conc = torch.quantile(conc, 0.99, dim=2).clamp_min(1e-6)
        ref_max = self.max_conc.to(x.device, x.dtype)
        conc = conc * (ref_max[None, :] / max_conc)[:, :, None]
        out = torch.exp(-(ref_stains @ conc)).reshape(n, 3, h, w)
        out = ((_IO + 1.0) * out - 1.0) / _IO
        # Patches with (almost) no tissue, e.g. background, are left as they are.
        return torch.where(ok[:, None, None, None], out, x).clamp(0, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "stains": [[round(float(v), 6) for v in row] for row in self.stains.tolist()],
            "max_conc": [round(float(v), 6) for v in self.max_conc.tolist()],
            "beta": self.beta,
            "alpha": self.alpha,
        }


# --- Reinhard ------------------------------------------------------------------------------
_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB ``(N, 3, H, W)`` in [0, 1] -> CIE L*a*b* (D65)."""
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(x.device, x.dtype), lin)
    xyz = xyz / _WHITE.to(x.device, x.dtype).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab`, clamped to [0, 1]."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787) * _WHITE.to(lab.device, lab.dtype).view(
        1, 3, 1, 1
    )
    lin = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab.device, lab.dtype), xyz).clamp(
        0, 1
    )
    return torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin).clamp(
        0, 1
    )


class ReinhardNormalizer(StainNormalizer):
    """Reinhard et al. (2001): match per-channel mean and std in L*a*b* to the reference."""

    method = "reinhard"

    def __init__(self, mean: Any, std: Any) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(3)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(3)

    @classmethod
    def fit(cls, images: torch.Tensor) -> ReinhardNormalizer:
        lab = rgb_to_lab(images).permute(1, 0, 2, 3).reshape(3, -1)
        return cls(lab.mean(1), lab.std(1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        lab = rgb_to_lab(x)
        mean = lab.mean((2, 3), keepdim=True)
        std = lab.std((2, 3), keepdim=True).clamp_min(1e-3)
        ref_mean = self.mean.to(x.device, x.dtype).view(1, 3, 1, 1)
        ref_std = self.std.to(x.device, x.dtype).view(1, 3, 1, 1)
        return lab_to_rgb((lab - mean) / std * ref_std + ref_mean)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mean": [round(float(v), 6) for v in self.mean.tolist()],
            "std": [round(float(v), 6) for v in self.std.tolist()],
        }


# --- construction --------------------------------------------------------------------------
def fit_normalizer(method: str, images: np.ndarray, n_reference: int = 256, seed: int = 0) -> StainNormalizer:
    """Fit ``method`` on up to ``n_reference`` random uint8 NHWC patches (e.g. the training set)."""
    if method not in STAIN_METHODS:
        raise OptionError(f"unknown stain normalisation {method!r}; choose macenko or reinhard")
    if len(images) == 0:
        raise OptionError("stain normalisation needs at least one reference patch")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(images), size=min(n_reference, len(images)), replace=False))
    ref = torch.from_numpy(np.ascontiguousarray(images[pick])).permute(0, 3, 1, 2).float() / 255.0
    return MacenkoNormalizer.fit(ref) if method == "macenko" else ReinhardNormalizer.fit(ref)


def normalizer_from_dict(params: dict[str, Any]) -> StainNormalizer:
    """Rebuild a normaliser from a model config's ``stain_normalization`` dict."""
    if not isinstance(params, dict) or "method" not in params:
        raise ModelConfigError("model config: stain_normalization must be a mapping with a 'method'")
    args = {k: v for k, v in params.items() if k != "method"}
    try:
        if params["method"] == "macenko":
            return MacenkoNormalizer(**args)
        if params["method"] == "reinhard":
            return ReinhardNormalizer(**args)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ModelConfigError(f"model config: bad stain_normalization parameters: {exc}") from None
    raise ModelConfigError(f"model config: unknown stain_normalization method {params['method']!r}")
