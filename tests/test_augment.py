"""Training augmentation: dihedral views, colour/stain jitter and crops."""

from __future__ import annotations

import pytest
import torch

from wsi_pipeline.d4 import NHWC, dihedral, inverse_dihedral, random_dihedral
from wsi_pipeline.hed import hed_to_rgb, rgb_to_hed
from wsi_pipeline.training.augment import (
    Augmenter,
    AugmentSettings,
    hed_jitter,
    hsv_jitter,
    hsv_to_rgb,
    random_crop_nhwc,
    rgb_to_hsv,
)


def _batch(n: int = 4, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_eight_dihedral_views_are_distinct_and_invertible() -> None:
    x = _batch(1)
    views = [dihedral(x, k) for k in range(8)]
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.equal(views[i], views[j]), (i, j)
        torch.testing.assert_close(inverse_dihedral(views[i], i), x, rtol=0, atol=0)


def test_dihedral_views_of_nhwc_match_nchw() -> None:
    x = _batch(2)
    nhwc = x.permute(0, 2, 3, 1)
    for k in range(8):
        assert torch.equal(dihedral(nhwc, k, NHWC), dihedral(x, k).permute(0, 2, 3, 1))
        assert torch.equal(inverse_dihedral(dihedral(nhwc, k, NHWC), k, NHWC), nhwc)


def test_dihedral_view_4_is_a_left_right_flip() -> None:
    x = _batch(1)
    assert torch.equal(dihedral(x, 4), torch.flip(x, dims=(-1,)))
    assert torch.equal(dihedral(x, 1), torch.rot90(x, 1, dims=(-2, -1)))
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_random_dihedral_applies_a_view_per_sample_and_is_seeded() -> None:
    x = _batch(64)
    a = random_dihedral(x, torch.Generator().manual_seed(1))
    b = random_dihedral(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    used = set()
    for i in range(len(x)):
        matches = [k for k in range(8) if torch.equal(a[i], dihedral(x[i : i + 1], k)[0])]
        assert len(matches) == 1
        used.add(matches[0])
    assert len(used) >= 6  # 64 draws from 8 views


def test_hsv_round_trip() -> None:
    x = _batch()
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_hed_round_trip() -> None:
    x = _batch().clamp(0.05, 1)
    torch.testing.assert_close(hed_to_rgb(rgb_to_hed(x)), x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("jitter", [hsv_jitter, hed_jitter])
def test_colour_jitter_keeps_range_shape_and_changes_colours(jitter) -> None:
    x = _batch(8)
    y = jitter(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert (y - x).abs().mean() > 1e-3
    assert (y - x).abs().mean() < 0.2  # mild, not a different image


def test_zero_strength_jitter_is_identity() -> None:
    x = _batch().clamp(0.05, 1)
    torch.testing.assert_close(hsv_jitter(x, 0.0, 0.0, 0.0), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(hed_jitter(x, 0.0, 0.0), x, atol=1e-4, rtol=0)


def test_random_crop_keeps_the_centre_region() -> None:
    x = torch.arange(2 * 96 * 96 * 3).reshape(2, 96, 96, 3)
    centre = random_crop_nhwc(x, 64, 0)
    assert torch.equal(centre, x[:, 16:80, 16:80])
    crops = random_crop_nhwc(x.repeat(20, 1, 1, 1), 64, 8, torch.Generator().manual_seed(0))
    assert crops.shape == (40, 64, 64, 3)
    # Every crop still contains the labelled centre 32 px of its patch.
    for i, crop in enumerate(crops):
        top = int((crop[0, 0, 0] - x[i % 2, 0, 0, 0]) // (96 * 3))
        left = int((crop[0, 0, 0] - x[i % 2, 0, 0, 0]) % (96 * 3)) // 3
        assert 8 <= top <= 24 and 8 <= left <= 24
        assert torch.equal(crop, x[i % 2, top : top + 64, left : left + 64])
    with pytest.raises(ValueError):
        random_crop_nhwc(x, 128, 0)


def test_augmenter_all_off_is_identity_and_on_is_seeded() -> None:
    x = _batch(8)
    off = Augmenter(AugmentSettings(dihedral=False))
    assert torch.equal(off(x), x)
    on = AugmentSettings(dihedral=True, hsv=True, hed=True)
    a, b = Augmenter(on, seed=3)(x), Augmenter(on, seed=3)(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


def test_hed_jitter_equals_explicit_colour_deconvolution() -> None:
    x = _batch(6).clamp(0.05, 1)
    scale, shift = 0.2, 0.1
    fast = hed_jitter(x, scale, shift, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    alpha = 1 + (2 * torch.rand(3, 6, generator=g) - 1) * scale
    beta = (2 * torch.rand(3, 6, generator=g) - 1) * shift
    hed = rgb_to_hed(x) * alpha.T[:, :, None, None] + beta.T[:, :, None, None]
    torch.testing.assert_close(fast, hed_to_rgb(hed), atol=1e-5, rtol=0)


def test_random_shift_translates_each_patch_by_at_most_shift_px() -> None:
    from wsi_pipeline.training.augment import random_shift

    n, side, k = 16, 24, 3
    ramp = torch.arange(side * side, dtype=torch.float32).reshape(1, 1, side, side)
    x = ramp.repeat(n, 3, 1, 1) + torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1) * 1e4
    out = random_shift(x, k, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    offsets = set()
    for i in range(n):
        # the centre pixel's value says where it came from: a pure translation within +-k px
        value = float(out[i, 0, side // 2, side // 2] - i * 1e4)
        dy, dx = divmod(int(value), side)
        dy, dx = dy - side // 2, dx - side // 2
        assert abs(dy) <= k and abs(dx) <= k
        inner = out[i, 0, k:-k, k:-k]
        src = x[i, 0, k + dy : side - k + dy, k + dx : side - k + dx]
        assert torch.equal(inner, src)  # the whole interior moved together
        offsets.add((dy, dx))
    assert len(offsets) > 4  # per sample, not one shift for the batch
    assert torch.equal(random_shift(x, 0), x)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"shift": -3}, "augment.shift"),
        ({"shift": "abc"}, "augment.shift"),
        ({"shift": 2.5}, "augment.shift"),
        ({"hed_scale": -0.1}, "augment.hed_scale"),
        ({"hue": "abc"}, "augment.hue"),
        ({"hed": "yes"}, "augment.hed"),
    ],
)
def test_bad_augment_settings_are_refused_by_name(settings, message) -> None:
    from wsi_pipeline.errors import OptionError
    from wsi_pipeline.training.config import TrainConfig

    with pytest.raises(OptionError, match=message):
        TrainConfig(augment=settings)


@pytest.mark.parametrize("layout", ["nchw", "nhwc_uint8"])
def test_per_sample_and_grouped_views_agree(layout: str) -> None:
    """The CPU path (one copy per sample) and the accelerator path (samples grouped by view) give
    the same batch, in both layouts the training path uses."""
    from wsi_pipeline.d4 import NCHW, grouped_views, per_sample_views

    x = _batch(24)
    dims = NCHW
    if layout == "nhwc_uint8":
        x, dims = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous(), NHWC
    ks = torch.arange(24) % 8
    a, b = per_sample_views(x, ks, dims), grouped_views(x, ks, dims)
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    for i in range(len(x)):
        assert torch.equal(a[i : i + 1], dihedral(x[i : i + 1], int(ks[i]), dims))


def test_augmenter_on_uint8_patches_equals_augmenting_their_floats() -> None:
    """The training path takes the views on uint8 NHWC pixels; the result equals converting first."""
    from wsi_pipeline.models.preprocess import patches_to_float

    patches = (_batch(16) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    on = AugmentSettings(dihedral=True, hed=True, hsv=True, shift=3)
    direct = Augmenter(on, seed=5).patches(patches)
    via_float = Augmenter(on, seed=5)(patches_to_float(patches))
    assert torch.equal(direct, via_float)
    assert not torch.equal(direct, patches_to_float(patches))
