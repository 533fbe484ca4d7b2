"""dense_cnn: one fully convolutional pass equals tile-by-tile scoring; the d4 variant is invariant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_pipeline.d4 import D4_INVERSE, D4_PRODUCT, dihedral
from wsi_pipeline.models import create_model
from wsi_pipeline.models.dense_cnn import DENSE_STRIDE, DENSE_TILE

SMALL = {"widths": [8, 8, 16, 16, 16]}


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random batch-norm statistics, so eval mode is not the identity."""
    torch.manual_seed(1)
    for m in model.modules():
        if hasattr(m, "running_mean") and isinstance(m.running_mean, torch.Tensor):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_d4_tables_describe_the_group() -> None:
    x = torch.rand(5, 7, 7)
    for a in range(8):
        assert torch.equal(dihedral(dihedral(x, D4_INVERSE[a]), a), x)
        for b in range(8):
            assert torch.equal(dihedral(dihedral(x, b), a), dihedral(x, D4_PRODUCT[a][b]))


@pytest.mark.parametrize(
    ("group", "depths"), [("none", (2, 1, 3)), ("d4", (2, 1, 3)), ("none", (2, 3, 2)), ("none", (4, 2, 2))]
)
def test_one_dense_pass_equals_scoring_each_tile(group: str, depths: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = _trained_like(create_model("dense_cnn", group=group, depths=depths, **SMALL))
    rows, cols = 5, 7
    region = torch.rand(1, 3, DENSE_TILE + (rows - 1) * DENSE_STRIDE, DENSE_TILE + (cols - 1) * DENSE_STRIDE)
    with torch.no_grad():
        dense = model.dense(region)[0, 0]
        tiles = torch.stack(
            [
                region[
                    0,
                    :,
                    r * DENSE_STRIDE : r * DENSE_STRIDE + DENSE_TILE,
                    c * DENSE_STRIDE : c * DENSE_STRIDE + DENSE_TILE,
                ]
                for r in range(rows)
                for c in range(cols)
            ]
        )
        one_by_one = model(tiles).reshape(rows, cols)
    assert dense.shape == (rows, cols)
    scale = float(one_by_one.abs().max())
    assert float((dense - one_by_one).abs().max()) <= 1e-5 * max(1.0, scale)


def test_d4_variant_is_invariant_to_rotations_and_flips() -> None:
    torch.manual_seed(0)
    model = _trained_like(create_model("dense_cnn", group="d4", **SMALL))
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        views = torch.stack([model(dihedral(x, k)).reshape(-1) for k in range(8)])
    assert float((views - views[0]).abs().max()) <= 1e-4 * max(1.0, float(views.abs().max()))
    plain = create_model("dense_cnn", group="none", **SMALL).eval()
    with torch.no_grad():
        plain_views = torch.stack([plain(dihedral(x, k)).reshape(-1) for k in range(8)])
    assert float((plain_views - plain_views[0]).abs().max()) > 1e-3  # the plain network is not


def test_inference_copy_is_plain_and_equal() -> None:
    torch.manual_seed(0)
    model = _trained_like(create_model("dense_cnn", group="d4", **SMALL))
    copy = model.inference_copy()
    kinds = {type(m).__name__ for m in copy.modules()}
    assert "Conv2d" in kinds and not kinds & {
        "GroupConv",
        "LiftConv",
        "GroupBatchNorm",
        "BatchNorm2d",
    }  # folded
    x = torch.rand(2, 3, 128, 112)
    with torch.no_grad():
        np.testing.assert_allclose(copy.dense(x).numpy(), model.dense(x).numpy(), rtol=1e-4, atol=1e-4)


def test_group_batch_norm_statistics_are_shared_by_orientations() -> None:
    """Training-mode statistics are pooled over a channel's 8 orientations: still exactly invariant."""
    torch.manual_seed(0)
    model = create_model("dense_cnn", group="d4", dropout=0.0, **SMALL).train()
    x = torch.rand(3, 3, 96, 96)
    views = torch.stack([model(dihedral(x, k)).reshape(-1) for k in range(8)])  # train mode, batch stats
    assert float((views - views[0]).abs().max()) <= 1e-4 * max(1.0, float(views.abs().max()))
    views.sum().backward()
    bn = next(m for m in model.modules() if type(m).__name__ == "GroupBatchNorm")
    assert bn.running_mean.shape == (SMALL["widths"][0],)
    assert bn.weight.grad is not None and torch.isfinite(bn.weight.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widths": [8, 8, 8]}, "5 positive widths"),
        ({"group": "c4"}, "group must be"),
        ({"dropout": 1.5}, "dropout"),
        ({"depths": [2, 2, 2]}, "do not pool evenly"),  # 48 -> 44 -> 22 -> 18 -> 9: odd
        ({"depths": [2, 3]}, "3 positive stage depths"),
        ({"depths": [4, 4, 4]}, "do not pool evenly"),  # too deep for 96 px
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("dense_cnn", **kwargs)
