"""``dense_cnn``: a patch classifier that also runs fully convolutionally over whole regions.

Every layer is a valid (unpadded) convolution or a 2x2 max pool, sized so that the receptive
field of the single output is exactly the 96 px patch and every pooling window of a tile lines
up with the windows of its neighbours 16 px away. Run on a region of ``(rows - 1) * 16 + 96``
px it therefore returns, in one pass, the logit of every 96 px tile at a 16 px step, identical
(up to float rounding) to scoring the tiles one by one; coarser steps that are multiples of 16
are read off that map. Layers (``widths = (w0, ..., w4)``, sizes for one 96 px tile):

    stem   2x2 conv, stride 2        96 -> 48     w0
    s2     3x3 conv, 3x3 conv, pool  48 -> 22     w1
    s4     3x3 conv, pool            22 -> 10     w2
    s8     3 x 3x3 conv, pool        10 -> 2      w3
    head   2x2 conv (a dense layer over the 2x2 map), dropout, 1x1 conv -> 1 logit

``depths`` sets the 3x3 convs per pooled stage (above: ``(2, 1, 3)``); any that pool evenly work,
e.g. ``(2, 3, 2)`` (48 -> 44 -> 22 -> 16 -> 8 -> 4 -> 2) or ``(4, 2, 2)``, the head then covering
what is left. Deep low-resolution stages cost most in a dense pass (their windows overlap most).

``group="d4"`` makes the network invariant to the 8 rotations/flips of the patch by
construction (P4M group convolutions with tied weights, Cohen & Welling 2016; on PCam:
Veeling et al. 2018): each ``w`` then counts orientation-channel groups of 8. For inference it
is turned into the equivalent plain network of standard convolutions (:meth:`inference_copy`),
which the engine folds and runs like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsi_pipeline.d4 import D4_INVERSE, D4_PRODUCT, dihedral
from wsi_pipeline.models.fold import fold_batchnorm
from wsi_pipeline.models.registry import register_model

#: Input side the network is built for, and the step between tiles of one dense pass.
DENSE_TILE = 96
DENSE_STRIDE = 16
GROUP_ORDER = 8


def _layer_plan(widths: Sequence[int], depths: Sequence[int] = (2, 1, 3)) -> list[tuple[str, int, int, int]]:
    """``(kind, c_in, c_out, kernel)`` for every conv (kind 'conv') and pool (kind 'pool'):
    the stem, ``depths[i]`` 3x3 convs then a 2x2 pool per stage, and a head conv over what is left."""
    w0, *stage_widths, w4 = (int(w) for w in widths)
    if len(depths) != 3 or any(int(d) < 1 for d in depths):
        raise ValueError(f"dense_cnn needs 3 positive stage depths, got {list(depths)}")
    plan = [("stem", 3, w0, 2)]
    side, c_in = DENSE_TILE // 2, w0
    for depth, width in zip(depths, stage_widths, strict=True):
        side -= 2 * int(depth)
        if side < 2 or side % 2:
            raise ValueError(f"dense_cnn depths {list(depths)} do not pool evenly on a {DENSE_TILE} px tile")
        plan += [("conv", c_in if i == 0 else width, width, 3) for i in range(int(depth))]
        plan.append(("pool", 0, 0, 2))
        side, c_in = side // 2, width
    return [*plan, ("conv", c_in, w4, side)]


class _Dense(nn.Module):
    """``dense`` maps ``(N, 3, 96 + 16k, 96 + 16m)`` regions to the logits ``(N, 1, k + 1, m + 1)``
    of their 96 px tiles at a 16 px step; ``forward`` scores 96 px tiles, one logit each ``(N, 1)``."""

    dense_tile = DENSE_TILE
    dense_stride = DENSE_STRIDE
    layers: nn.Module

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and x.shape[-2:] != (DENSE_TILE, DENSE_TILE):
            raise ValueError(
                f"dense_cnn scores {DENSE_TILE} px tiles, got {tuple(x.shape[-2:])}; use .dense()"
            )
        return self.layers(x).flatten(1)


class DenseCNN(_Dense):
    """See the module docstring."""

    layers: nn.Sequential  # the trainable network; its inference copy may be an fx graph

    def __init__(
        self, widths: Sequence[int], dropout: float, group: str, depths: Sequence[int] = (2, 1, 3)
    ) -> None:
        super().__init__()
        if len(widths) != 5 or any(int(w) < 1 for w in widths):
            raise ValueError(f"dense_cnn needs 5 positive widths, got {list(widths)}")
        if group not in ("none", "d4"):
            raise ValueError(f"dense_cnn group must be 'none' or 'd4', got {group!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.group = group
        layers: list[nn.Module] = []
        for kind, c_in, c_out, k in _layer_plan(widths, depths):
            if kind == "pool":
                layers.append(nn.MaxPool2d(2))
                continue
            stride = 2 if kind == "stem" else 1
            if group == "d4":
                conv: nn.Module = (
                    LiftConv(c_in, c_out, k, stride) if kind == "stem" else GroupConv(c_in, c_out, k)
                )
                layers += [conv, GroupBatchNorm(c_out), nn.ReLU(inplace=True)]
            else:
                plain = nn.Conv2d(c_in, c_out, k, stride=stride, bias=False)
                layers += [plain, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                nn.init.kaiming_normal_(plain.weight, mode="fan_out", nonlinearity="relu")
        if group == "d4":
            layers.append(GroupPool())
        layers += [nn.Dropout(float(dropout)), nn.Conv2d(int(widths[4]), 1, 1)]
        self.layers = nn.Sequential(*layers)

    def inference_copy(self) -> nn.Module:
        """An equivalent network of standard layers in eval mode: group weights expanded, BatchNorm
        folded into the convolutions, ``dense`` kept."""
        was_training = self.training
        self.eval()
        try:
            return _PlainDense(fold_batchnorm(plain_layers(self.layers))).eval()
        finally:
            self.train(was_training)


class _PlainDense(_Dense):
    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers


# --- D4 group layers ---------------------------------------------------------------------
class LiftConv(nn.Module):
    """Image -> orientation channels: output channel ``o * 8 + g`` is ``conv(x, T_g W[o])``."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.stride = stride

    def full_weight(self) -> torch.Tensor:
        views = torch.stack([dihedral(self.weight, g) for g in range(GROUP_ORDER)], 1)
        return views.reshape(-1, *self.weight.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.full_weight(), stride=self.stride)


class GroupConv(nn.Module):
    """Orientation channels -> orientation channels with tied weights:
    ``out[o, g] = sum_{i, h} conv(f[i, h], T_g W[o, i, g^-1 h])`` (equivariant to D4)."""

    perms: torch.Tensor  # buffer: (8, 8) orientation permutation per group element

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__()
        # stored 4-D, (out, in x orientation, k, k), so the module converts to channels-last
        self.weight = nn.Parameter(torch.empty(c_out, c_in * GROUP_ORDER, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        perms = [[D4_PRODUCT[D4_INVERSE[g]][h] for h in range(GROUP_ORDER)] for g in range(GROUP_ORDER)]
        self.register_buffer("perms", torch.tensor(perms), persistent=False)

    def full_weight(self) -> torch.Tensor:
        o, i8, k, _ = self.weight.shape
        i = i8 // GROUP_ORDER
        weight = self.weight.reshape(o, i, GROUP_ORDER, k, k)
        views = [dihedral(weight[:, :, self.perms[g]], g) for g in range(GROUP_ORDER)]
        return torch.stack(views, 1).reshape(o * GROUP_ORDER, i * GROUP_ORDER, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.full_weight())


class GroupBatchNorm(nn.Module):
    """Batch norm whose statistics and affine parameters are shared by a channel's 8 orientations
    (so the network stays exactly equivariant in training too). Runs as one native batch norm over a
    free view ``(N, C, 8 * H * W)`` of NCHW-contiguous input: the group layers keep NCHW (their
    expanded weights are contiguous); channels-last input is made contiguous first."""

    running_mean: torch.Tensor  # buffers
    running_var: torch.Tensor

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.momentum, self.eps = channels, momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def expanded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Running mean, running var, weight and bias repeated for every orientation channel."""
        mean, var, weight, bias = (
            t.repeat_interleave(GROUP_ORDER)
            for t in (self.running_mean, self.running_var, self.weight, self.bias)
        )
        return mean, var, weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c8, h, w = x.shape
        grouped = x.contiguous().view(n, self.channels, GROUP_ORDER * h * w)
        out = F.batch_norm(
            grouped,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )
        return out.view(n, c8, h, w)


class GroupPool(nn.Module):
    """Mean over the 8 orientations of each channel: invariant features ``(N, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c8, h, w = x.shape
        return x.reshape(n, c8 // GROUP_ORDER, GROUP_ORDER, h, w).mean(2)


def plain_layers(layers: nn.Sequential) -> nn.Sequential:
    """The same computation with group layers replaced by standard Conv2d / BatchNorm2d."""
    out: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, (LiftConv, GroupConv)):
            weight = layer.full_weight().detach()
            stride = getattr(layer, "stride", 1)
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], stride=stride, bias=False)
            conv.weight.data.copy_(weight)
            out.append(conv)
        elif isinstance(layer, GroupBatchNorm):
            mean, var, weight, bias = (t.detach() for t in layer.expanded())
            bn = nn.BatchNorm2d(len(mean), eps=layer.eps)
            assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.data.copy_(weight)
            bn.bias.data.copy_(bias)
            out.append(bn)
        else:
            out.append(layer)
    return nn.Sequential(*out).to(next(layers.parameters()).device)


@register_model("dense_cnn")
def dense_cnn(
    widths: Sequence[int] = (32, 48, 96, 192, 256),
    dropout: float = 0.3,
    group: str = "none",
    depths: Sequence[int] = (2, 1, 3),
) -> nn.Module:
    """Dense-capable CNN for 96 px patches (see the module docstring): ~230 MFLOP per tile at the
    default widths; ``group="d4"`` for rotation/flip invariance (widths count groups of 8);
    ``depths``: 3x3 convs in each of the three pooled stages (any that pool evenly, e.g. (2, 3, 2))."""
    return DenseCNN(tuple(int(w) for w in widths), dropout, group, tuple(int(d) for d in depths))
