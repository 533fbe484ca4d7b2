"""Patch-classifier architectures, registered by name. Each outputs one logit per patch."""

from __future__ import annotations

from torch import nn

from wsi_pipeline.models.registry import register_model


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register_model("seed_cnn")
def seed_cnn(dropout: float = 0.5, dense: int = 384, input_size: int = 96) -> nn.Module:
    """The origin study's CNN: three blocks of 3 convs (32, 64, 128 filters) with pooling,
    a dense layer, 50 % dropout and one sigmoid logit (~2.3M parameters, ~1.2 GFLOP/tile at 96 px).
    """
    layers: list[nn.Module] = []
    c_in = 3
    for width in (32, 64, 128):
        layers += _conv_bn_relu(c_in, width) + _conv_bn_relu(width, width) + _conv_bn_relu(width, width)
        layers.append(nn.MaxPool2d(2))
        c_in = width
    side = input_size // 8
    layers.append(nn.AdaptiveMaxPool2d(max(1, side // 2)))
    pooled = max(1, side // 2)
    layers += [
        nn.Flatten(),
        nn.Linear(128 * pooled * pooled, dense),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(dense, 1),
    ]
    return nn.Sequential(*layers)
