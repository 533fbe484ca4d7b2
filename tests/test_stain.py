"""Stain normalisation (Macenko, Reinhard): batched, serialisable, and used at inference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wsi_pipeline.errors import ModelConfigError, OptionError
from wsi_pipeline.models import ModelConfig
from wsi_pipeline.models.preprocess import preprocess_patches
from wsi_pipeline.models.stain import (
    MacenkoNormalizer,
    ReinhardNormalizer,
    fit_normalizer,
    lab_to_rgb,
    normalizer_from_dict,
    rgb_to_lab,
)

H_REF = torch.tensor([0.65, 0.70, 0.29])
E_REF = torch.tensor([0.07, 0.99, 0.11])


def _he_patch(
    h_vec: torch.Tensor, e_vec: torch.Tensor, h_scale: float, e_scale: float, seed: int = 0
) -> torch.Tensor:
    """A synthetic H&E patch ``(1, 3, 48, 48)`` made by Beer-Lambert from two stain vectors:
    haematoxylin nuclei (blobs) on an eosin-stained background with some white glass."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    h = torch.zeros(48, 48)
    for _ in range(12):
        cy, cx = torch.randint(0, 48, (2,), generator=g).tolist()
        h += 1.2 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    e = 0.6 + 0.3 * torch.rand(48, 48, generator=g)
    e[:, :6] = 0.0  # glass
    h[:, :6] = 0.0
    stains = torch.stack([h_vec / h_vec.norm(), e_vec / e_vec.norm()], 1)  # (3, 2)
    od = stains @ torch.stack([h.flatten() * h_scale, e.flatten() * e_scale])
    return torch.exp(-od).reshape(1, 3, 48, 48).clamp(0, 1)


def _reference() -> torch.Tensor:
    return _he_patch(H_REF, E_REF, 1.0, 1.0)


def _shifted() -> torch.Tensor:
    # Same tissue, another lab: bluer haematoxylin, stronger H, paler E.
    return _he_patch(torch.tensor([0.55, 0.70, 0.45]), torch.tensor([0.15, 0.95, 0.20]), 1.4, 0.6)


@pytest.mark.parametrize(("cls", "factor"), [(MacenkoNormalizer, 0.5), (ReinhardNormalizer, 0.75)])
def test_normalisation_maps_a_stain_shifted_patch_closer_to_the_reference(cls, factor: float) -> None:
    ref, shifted = _reference(), _shifted()
    normalizer = cls.fit(ref)
    before = (shifted - ref).abs().mean()
    after = (normalizer.normalize(shifted) - ref).abs().mean()
    assert after < factor * before, (float(before), float(after))


@pytest.mark.parametrize("cls", [MacenkoNormalizer, ReinhardNormalizer])
def test_normalising_the_reference_itself_changes_little(cls) -> None:
    ref = _reference()
    out = cls.fit(ref).normalize(ref)
    assert out.shape == ref.shape
    assert (out - ref).abs().mean() < 0.02


def test_macenko_recovers_the_stain_vectors() -> None:
    fitted = MacenkoNormalizer.fit(_reference())
    h, e = fitted.stains[:, 0], fitted.stains[:, 1]
    assert torch.dot(h, H_REF / H_REF.norm()) > 0.98
    assert torch.dot(e, E_REF / E_REF.norm()) > 0.98


def test_batched_equals_one_by_one() -> None:
    batch = torch.cat([_reference(), _shifted(), _he_patch(H_REF, E_REF, 0.8, 1.2, seed=3)])
    for normalizer in (MacenkoNormalizer.fit(_reference()), ReinhardNormalizer.fit(_reference())):
        together = normalizer.normalize(batch)
        apart = torch.cat([normalizer.normalize(batch[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(together, apart, atol=1e-4, rtol=0)


def test_blank_patch_is_left_alone_by_macenko() -> None:
    blank = torch.full((1, 3, 48, 48), 0.95)
    torch.testing.assert_close(MacenkoNormalizer.fit(_reference()).normalize(blank), blank)


def test_lab_round_trip() -> None:
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_fit_on_uint8_and_dict_round_trip(method: str) -> None:
    images = (torch.cat([_reference(), _he_patch(H_REF, E_REF, 0.9, 1.1, seed=5)]) * 255).round()
    images = images.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    normalizer = fit_normalizer(method, images)
    params = normalizer.to_dict()
    assert params["method"] == method
    rebuilt = normalizer_from_dict(params)
    x = _shifted()
    torch.testing.assert_close(rebuilt.normalize(x), normalizer.normalize(x), atol=1e-4, rtol=0)
    out = normalizer.normalize_uint8(images)
    assert out.dtype == np.uint8 and out.shape == images.shape


def test_bad_method_and_bad_params_are_clear_errors() -> None:
    with pytest.raises(OptionError, match="unknown stain normalisation"):
        fit_normalizer("vahadane", np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ModelConfigError, match="unknown stain_normalization method"):
        normalizer_from_dict({"method": "vahadane"})
    with pytest.raises(ModelConfigError, match="bad stain_normalization parameters"):
        normalizer_from_dict({"method": "reinhard", "mean": [1, 2]})
    with pytest.raises(OptionError, match="too little stained tissue"):
        MacenkoNormalizer.fit(torch.ones(1, 3, 16, 16))


def test_preprocess_applies_the_configured_normalisation() -> None:
    normalizer = ReinhardNormalizer.fit(_reference())
    shifted = (_shifted() * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    plain = ModelConfig(architecture="tiny_resnet")
    stained = dataclasses.replace(plain, stain_normalization=normalizer.to_dict())
    expected = normalizer.normalize(shifted.permute(0, 3, 1, 2).float() / 255.0)
    torch.testing.assert_close(preprocess_patches(shifted, stained), expected, atol=1e-5, rtol=0)
    assert (preprocess_patches(shifted, plain) - expected).abs().mean() > 0.02
