"""Patch-classifier architectures, registered by name. Each outputs one logit per patch."""

from __future__ import annotations

import torch
from torch import nn

from wsi_pipeline.models.registry import register_model
from wsi_pipeline.pcam import PCAM_LABEL


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


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual shortcut (1x1 conv when shape changes).

    A strided shortcut subsamples first and then runs a stride-1 1x1 conv: the same function and the
    same weights as a strided 1x1 conv, without oneDNN's strided 1x1 weight-gradient kernel, which
    corrupts the heap on AVX2-only CPUs (torch 2.13, channels-last, fewer than 8 input channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = int(stride)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]
        return self.relu(out + self.shortcut(skip))


class CenterPool(nn.Module):
    """Average the feature-map cells that cover the centre ``center_px`` px of the input (the PCam
    label region), given the network's total ``stride``; their receptive fields still see the context."""

    def __init__(self, stride: int, center_px: int = PCAM_LABEL) -> None:
        super().__init__()
        self.cells = max(1, center_px // stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k_h, k_w = min(self.cells, h), min(self.cells, w)
        top, left = (h - k_h) // 2, (w - k_w) // 2
        return x[..., top : top + k_h, left : left + k_w].mean((-2, -1))


class TinyResNet(nn.Module):
    """A small ResNet for 96 px patches: stride-2 stem, residual blocks per stage (the first of each
    halving the resolution), global average or centre pooling, dropout and one logit."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        blocks: tuple[int, ...] | None = None,
        dropout: float = 0.2,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        blocks = tuple(int(b) for b in (blocks or (1,) * (len(widths) - 1)))
        if len(blocks) != len(widths) - 1:
            raise ValueError("blocks needs one entry per stage after the stem")
        if pool not in ("avg", "center"):
            raise ValueError(f"pool must be 'avg' or 'center', got {pool!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        c_in = widths[0]
        for width, n in zip(widths[1:], blocks, strict=True):
            stages.append(_BasicBlock(c_in, width, stride=2))
            stages += [_BasicBlock(width, width, stride=1) for _ in range(n - 1)]
            c_in = width
        self.stages = nn.Sequential(*stages)
        pooling: nn.Module = nn.AdaptiveAvgPool2d(1) if pool == "avg" else CenterPool(2 ** len(widths))
        self.head = nn.Sequential(pooling, nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, _BasicBlock):
                nn.init.zeros_(m.bn2.weight)  # each residual block starts as identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_model("tiny_resnet")
def tiny_resnet(
    widths: tuple[int, ...] | list[int] = (32, 64, 128, 256),
    blocks: tuple[int, ...] | list[int] | None = None,
    dropout: float = 0.2,
    pool: str = "avg",
) -> nn.Module:
    """Small residual network: ~1.2M parameters and ~0.2 GFLOP per 96 px tile (6x fewer than
    ``seed_cnn``). ``widths`` gives the stem width then one width per stage; ``blocks`` the
    residual blocks per stage (default one); ``pool="center"`` averages only the cells over the
    centre 32 px (the label region) instead of the whole map."""
    return TinyResNet(tuple(widths), tuple(blocks) if blocks is not None else None, dropout, pool)


@register_model("context_cnn")
def context_cnn(
    widths: tuple[int, ...] | list[int] = (16, 32, 64, 128),
    input_downsample: int = 2,
    dropout: float = 0.3,
    stem: str = "avg",
) -> nn.Module:
    """Slim VGG-style CNN that sees the whole 96 px patch at half resolution.

    The input is first averaged 2x2 (96 px at 0.97 um/px -> 48 px at 1.94 um/px) so the network keeps
    all the context around the centre 32 px label region at a quarter of the cost; then blocks of two
    3x3 conv-BN-ReLU layers with max pooling, global average pooling, dropout and one logit
    (~0.3M parameters, ~60 MFLOP per tile: 20x cheaper than ``seed_cnn``). On hcd_patches it learns
    faster per epoch than centre-cropped full-resolution variants of the same cost.

    ``stem="conv"`` replaces the fixed average pooling by a learned strided 3x3 conv-BN-ReLU with
    ``widths[0]`` filters, so fine nuclear texture at full resolution can reach the network.
    """
    if stem not in ("avg", "conv"):
        raise ValueError(f"context_cnn stem must be 'avg' or 'conv', got {stem!r}")
    layers: list[nn.Module] = []
    c_in = 3
    if input_downsample > 1 and stem == "avg":
        layers.append(nn.AvgPool2d(input_downsample))
    elif input_downsample > 1:
        layers += [
            nn.Conv2d(3, int(widths[0]), 3, stride=input_downsample, padding=1, bias=False),
            nn.BatchNorm2d(int(widths[0])),
            nn.ReLU(inplace=True),
        ]
        c_in = int(widths[0])
    for width in widths:
        layers += _conv_bn_relu(c_in, int(width)) + _conv_bn_relu(int(width), int(width))
        layers.append(nn.MaxPool2d(2))
        c_in = int(width)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, 1)]
    return nn.Sequential(*layers)
