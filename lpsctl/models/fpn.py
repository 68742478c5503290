"""EfficientPS 2-way FPN (SPEC §3.3): a top-down and a bottom-up path with separate 1×1 laterals, summed per level
and smoothed by a depthwise-separable 3×3 conv.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def init_conv(module: nn.Module) -> None:
    """He initialisation for the leaky-ReLU convs of the new (non-ImageNet) parts; zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, a=0.01, nonlinearity="leaky_relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ConvNorm(nn.Sequential):
    """k×k conv (no bias: the norm has one) + activated norm. Tensor[B, C_in, H, W] → Tensor[B, C_out, H', W']."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        norm_layer: Callable[..., nn.Module],
        stride: int = 1,
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        activation: str = "leaky_relu",
    ) -> None:
        padding = (dilation[0] * (kernel_size // 2), dilation[1] * (kernel_size // 2))
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            norm_layer(out_channels, activation=activation),
        )


class SeparableConv(nn.Sequential):
    """Depthwise 3×3 → pointwise 1×1 → norm (the FPN output conv). Tensor[B, C_in, H, W] → Tensor[B, C_out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, *, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
        )


class TwoWayFPN(nn.Module):
    """Fuse backbone maps C4, C8, C16, C32 into P4, P8, P16, P32 of `out_channels` each (SPEC §3.3).

    `forward([Tensor[B, in_channels[i], H_i, W_i]]) -> [Tensor[B, out_channels, H_i, W_i]]`, finest level first.
    Levels are resized to each other's exact sizes (nearest), so odd sizes are fine.
    """

    def __init__(
        self, in_channels: Sequence[int], out_channels: int = 256, *, norm_layer: Callable[..., nn.Module]
    ) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"TwoWayFPN needs at least 2 input levels, got in_channels={list(in_channels)}")
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.top_down_laterals = nn.ModuleList(
            ConvNorm(channels, out_channels, 1, norm_layer=norm_layer) for channels in in_channels
        )
        self.bottom_up_laterals = nn.ModuleList(
            ConvNorm(channels, out_channels, 1, norm_layer=norm_layer) for channels in in_channels
        )
        self.output_convs = nn.ModuleList(
            SeparableConv(out_channels, out_channels, norm_layer=norm_layer) for _ in in_channels
        )
        init_conv(self)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.in_channels):
            raise ValueError(f"TwoWayFPN expects {len(self.in_channels)} feature maps, got {len(features)}")
        top_down_per_level = [self.top_down_laterals[-1](features[-1])]  # coarse to fine, reversed below
        for level in range(len(features) - 2, -1, -1):
            lateral = self.top_down_laterals[level](features[level])
            upsampled = F.interpolate(top_down_per_level[-1], size=lateral.shape[-2:], mode="nearest")
            top_down_per_level.append(lateral + upsampled)
        top_down_per_level.reverse()

        outputs: list[Tensor] = []
        bottom_up = self.bottom_up_laterals[0](features[0])
        for level, top_down in enumerate(top_down_per_level):
            if level > 0:
                lateral = self.bottom_up_laterals[level](features[level])
                bottom_up = lateral + F.interpolate(bottom_up, size=lateral.shape[-2:], mode="nearest")
            outputs.append(self.output_convs[level](top_down + bottom_up))
        return outputs
