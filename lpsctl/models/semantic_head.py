"""EfficientPS semantic head (SPEC §3.4): LSFE on P4/P8, DPC on P16/P32, mismatch-correction modules and the
aggregation that yields per-pixel class logits at input resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpsctl.models.fpn import ConvNorm, init_conv

DPC_DILATIONS: tuple[tuple[int, int], ...] = ((1, 6), (1, 1), (6, 21), (18, 15), (6, 3))


def upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of Tensor[B, C, h, w] to Tensor[B, C, size[0], size[1]]."""
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


class SeparableConvUnit(nn.Sequential):
    """Depthwise 3×3 (dilated) → norm → pointwise 1×1 → norm, both leaky. Tensor[B, C_in, H, W] → [B, C_out, H, W]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: Callable[..., nn.Module],
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__(
            ConvNorm(in_channels, in_channels, 3, norm_layer=norm_layer, dilation=dilation, groups=in_channels),
            ConvNorm(in_channels, out_channels, 1, norm_layer=norm_layer),
        )


class LSFE(nn.Sequential):
    """Large-scale feature extractor: two separable 3×3 units, in_channels → channels → channels."""

    def __init__(self, in_channels: int, channels: int, *, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__(
            SeparableConvUnit(in_channels, channels, norm_layer=norm_layer),
            SeparableConvUnit(channels, channels, norm_layer=norm_layer),
        )


class DPC(nn.Module):
    """Dense prediction cell: five dilated separable 3×3 branches, concatenated and projected to `out_channels`.

    Branch 0 reads the input; branches 1, 2, 3 read branch 0; branch 4 reads branch 3 (EfficientPS wiring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: Callable[..., nn.Module],
        dilations: Sequence[Sequence[int]] = DPC_DILATIONS,
    ) -> None:
        super().__init__()
        if len(dilations) != 5 or any(len(pair) != 2 for pair in dilations):
            raise ValueError(f"DPC needs five (row, col) dilations, got {[tuple(pair) for pair in dilations]}")
        self.branches = nn.ModuleList(
            SeparableConvUnit(in_channels, in_channels, norm_layer=norm_layer, dilation=(int(row), int(col)))
            for row, col in dilations
        )
        self.projection = ConvNorm(5 * in_channels, out_channels, 1, norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        first = self.branches[0](x)
        third = self.branches[3](first)
        outputs = [first, self.branches[1](first), self.branches[2](first), third, self.branches[4](third)]
        return self.projection(torch.cat(outputs, dim=1))


class MismatchCorrection(nn.Module):
    """Two separable 3×3 units, then bilinear upsampling to the next finer level's size (×2)."""

    def __init__(self, channels: int, *, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            SeparableConvUnit(channels, channels, norm_layer=norm_layer),
            SeparableConvUnit(channels, channels, norm_layer=norm_layer),
        )

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return upsample(self.convs(x), size)


class SemanticHead(nn.Module):
    """Semantic logits from the FPN levels (SPEC §3.4).

    `forward([P4, P8, P16, P32]) -> Tensor[B, num_classes, 4·H4, 4·W4]` (raw logits at input resolution), where
    P_s is Tensor[B, in_channels, H_s, W_s].
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_classes: int = 19,
        *,
        lsfe_channels: int = 128,
        dpc_dilations: Sequence[Sequence[int]] = DPC_DILATIONS,
        norm_layer: Callable[..., nn.Module],
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.lsfe4 = LSFE(in_channels, lsfe_channels, norm_layer=norm_layer)
        self.lsfe8 = LSFE(in_channels, lsfe_channels, norm_layer=norm_layer)
        self.dpc16 = DPC(in_channels, lsfe_channels, norm_layer=norm_layer, dilations=dpc_dilations)
        self.dpc32 = DPC(in_channels, lsfe_channels, norm_layer=norm_layer, dilations=dpc_dilations)
        self.mc8 = MismatchCorrection(lsfe_channels, norm_layer=norm_layer)
        self.mc4 = MismatchCorrection(lsfe_channels, norm_layer=norm_layer)
        self.classifier = nn.Conv2d(4 * lsfe_channels, num_classes, 1)
        init_conv(self)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != 4:
            raise ValueError(f"SemanticHead expects 4 FPN levels (P4, P8, P16, P32), got {len(features)}")
        p4, p8, p16, p32 = features
        large4, large8 = self.lsfe4(p4), self.lsfe8(p8)
        dense16, dense32 = self.dpc16(p16), self.dpc32(p32)
        size4, size8, size16 = large4.shape[-2:], large8.shape[-2:], dense16.shape[-2:]

        sum8 = large8 + self.mc8(dense16 + upsample(dense32, size16), size8)
        sum4 = large4 + self.mc4(sum8, size4)
        merged = torch.cat([sum4, upsample(sum8, size4), upsample(dense16, size4), upsample(dense32, size4)], dim=1)
        logits = self.classifier(merged)
        return upsample(logits, (4 * size4[0], 4 * size4[1]))
