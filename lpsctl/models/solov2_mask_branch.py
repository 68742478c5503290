"""SOLOv2 mask-feature branch (SPEC §3.5): the FPN levels P4..P32 fused into one stride-4 map of E channels."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

GROUP_NORM_GROUPS = 32  # GroupNorm(32) throughout the SOLOv2 head, as in the paper's code


def coordinate_channels(batch: int, height: int, width: int, *, like: Tensor) -> Tensor:
    """CoordConv channels (x, y), each spanning [-1, 1] across the map: Tensor[batch, 2, height, width]."""
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).unsqueeze(0).expand(batch, -1, -1, -1)


def conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Conv (no bias, GroupNorm follows) + GroupNorm(32) + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.GroupNorm(GROUP_NORM_GROUPS, out_channels),
        nn.ReLU(inplace=True),
    )


class MaskFeatureBranch(nn.Module):
    """Level i (stride 4·2^i) gets i stages of (3×3 conv + GN + ReLU + ×2 bilinear), level 0 one conv; the coarsest
    level also gets two coordinate channels; the sum goes through 1×1 conv + GN + ReLU to `out_channels` (E).

    forward(features: list of Tensor[B, in_channels, H/4·2^-i, W/4·2^-i]) -> Tensor[B, out_channels, H/4, W/4]
    """

    def __init__(self, in_channels: int, inner_channels: int, out_channels: int, num_levels: int = 4) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.per_level = nn.ModuleList()
        for level in range(num_levels):
            if level == 0:
                self.per_level.append(conv_norm_relu(in_channels, inner_channels))
                continue
            stages: list[nn.Module] = []
            for stage in range(level):
                first_in = in_channels + (2 if level == num_levels - 1 else 0)
                stages.append(conv_norm_relu(first_in if stage == 0 else inner_channels, inner_channels))
                stages.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.per_level.append(nn.Sequential(*stages))
        self.predict = conv_norm_relu(inner_channels, out_channels, kernel_size=1)

    def forward(self, features: list[Tensor]) -> Tensor:
        if len(features) != self.num_levels:
            raise ValueError(f"mask-feature branch expects {self.num_levels} FPN levels, got {len(features)}")
        fused = self.per_level[0](features[0])
        for level in range(1, self.num_levels):
            feature = features[level]
            if level == self.num_levels - 1:
                batch, _, height, width = feature.shape
                feature = torch.cat([feature, coordinate_channels(batch, height, width, like=feature)], dim=1)
            upsampled = self.per_level[level](feature)
            if upsampled.shape[-2:] != fused.shape[-2:]:
                # inputs not divisible by 32 give coarse maps whose ×2^i overshoots the stride-4 map by a pixel
                upsampled = F.interpolate(upsampled, size=fused.shape[-2:], mode="bilinear", align_corners=False)
            fused = fused + upsampled
        return self.predict(fused)
