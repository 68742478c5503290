"""SOLOv2 instance head (SPEC §3.5; Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation", 2020).

Category and kernel branches over five grid levels, a stride-4 mask-feature branch, and the dynamic 1×1 convolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lpsctl.config import SoloConfig
from lpsctl.errors import ConfigError
from lpsctl.labels import NUM_THING_CLASSES
from lpsctl.structures import SoloGeometry, SoloOutputs

_DEFAULTS = SoloConfig()
GROUP_NORM_GROUPS = 32  # GroupNorm(32) throughout the SOLOv2 head, as in the paper's code
NUM_LEVELS = 5  # grid levels built from the 4 FPN maps (see SOLOv2Head.level_inputs)
CATEGORY_PRIOR = 0.01  # initial foreground probability of every cell: bias −log((1 − p) / p) = −log(99)
INIT_STD = 0.01  # N(0, 0.01) conv weights, as in the SOLOv2 code
# nominal strides of the five grid levels (P4 resized to stride 8, P8, P16, P32, P64 resized to stride 32; see
# SOLOv2Head.level_inputs), used as the minimum stride-4 mask area of each level, as the SOLOv2 code does
LEVEL_STRIDES = (8, 8, 16, 32, 32)
MASK_STRIDE = 4  # the mask features are at stride 4 of the network input (P4)


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


class SOLOv2Head(nn.Module):
    """Kernel, category and mask-feature branches; towers shared across the five grid levels.

    forward(features: [P4, P8, P16, P32], each Tensor[B, in_channels, H/s, W/s]) -> SoloOutputs.
    `geometry` says where the levels sit (grids, the scale range each level is assigned, strides), for the
    criterion's target assignment and the post-processor's decoding.
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_classes: int = NUM_THING_CLASSES,
        *,
        grids: tuple[int, ...] = _DEFAULTS.grids,
        scale_ranges: tuple[tuple[int, int], ...] = _DEFAULTS.scale_ranges,
        stacked_convs: int = _DEFAULTS.stacked_convs,
        head_channels: int = _DEFAULTS.head_channels,
        kernel_dim: int = _DEFAULTS.kernel_dim,
        mask_feature_channels: int = _DEFAULTS.mask_feature_channels,
    ) -> None:
        super().__init__()
        if len(grids) != NUM_LEVELS:
            raise ValueError(f"SOLOv2 needs {NUM_LEVELS} grid sizes (one per level), got {len(grids)}: {grids}")
        self.num_classes = num_classes
        self.geometry = solo_geometry(grids, scale_ranges)
        self.kernel_tower = nn.Sequential(
            *[conv_norm_relu(in_channels + 2 if i == 0 else head_channels, head_channels) for i in range(stacked_convs)]
        )
        self.category_tower = nn.Sequential(
            *[conv_norm_relu(in_channels if i == 0 else head_channels, head_channels) for i in range(stacked_convs)]
        )
        tower_out = head_channels if stacked_convs > 0 else in_channels
        self.kernel_predictor = nn.Conv2d(tower_out + (2 if stacked_convs == 0 else 0), kernel_dim, 3, padding=1)
        self.category_predictor = nn.Conv2d(tower_out, num_classes, 3, padding=1)
        self.mask_branch = MaskFeatureBranch(in_channels, mask_feature_channels, kernel_dim)
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: SoloConfig, in_channels: int) -> SOLOv2Head:
        check_solo_config(cfg)
        return cls(
            in_channels,
            NUM_THING_CLASSES,
            grids=cfg.grids,
            scale_ranges=cfg.scale_ranges,
            stacked_convs=cfg.stacked_convs,
            head_channels=cfg.head_channels,
            kernel_dim=cfg.kernel_dim,
            mask_feature_channels=cfg.mask_feature_channels,
        )

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.category_predictor.bias is not None:
            nn.init.constant_(self.category_predictor.bias, -math.log((1 - CATEGORY_PRIOR) / CATEGORY_PRIOR))

    @staticmethod
    def level_inputs(features: list[Tensor]) -> list[Tensor]:
        """Five grid-level inputs from [P4, P8, P16, P32], as the SOLOv2 code does with a 5-level FPN: level 0 = P4
        resized to P8's size, levels 1-3 = P8, P16, P32, level 4 = P32 subsampled to stride 64 (max-pool, kernel 1,
        stride 2: mmdetection's extra FPN level) then resized back to P32's size. Their nominal strides for the
        area filter at inference are therefore (8, 8, 16, 32, 32)."""
        p4, p8, p16, p32 = features
        p64 = F.max_pool2d(p32, kernel_size=1, stride=2)
        return [
            F.interpolate(p4, size=p8.shape[-2:], mode="bilinear", align_corners=False),
            p8,
            p16,
            p32,
            F.interpolate(p64, size=p32.shape[-2:], mode="bilinear", align_corners=False),
        ]

    def forward(self, features: list[Tensor]) -> SoloOutputs:
        if len(features) != 4:
            raise ValueError(f"SOLOv2Head expects the 4 FPN maps [P4, P8, P16, P32], got {len(features)}")
        category_per_level, kernel_per_level = [], []
        for level_feature, grid in zip(self.level_inputs(features), self.geometry.grids, strict=True):
            # the grid is the image split S×S, so the level map is resampled to S×S whatever its aspect ratio
            category_feature = F.interpolate(level_feature, size=(grid, grid), mode="bilinear", align_corners=False)
            coords = coordinate_channels(category_feature.shape[0], grid, grid, like=category_feature)
            kernel_feature = torch.cat([category_feature, coords], dim=1)
            kernel_per_level.append(self.kernel_predictor(self.kernel_tower(kernel_feature)))
            category_per_level.append(self.category_predictor(self.category_tower(category_feature)))
        return SoloOutputs(category_per_level, kernel_per_level, self.mask_branch(features))


def solo_geometry(grids: Sequence[int], scale_ranges: Sequence[Sequence[int]]) -> SoloGeometry:
    """The geometry of a SOLOv2 head with these grids and scale ranges (its strides are fixed by the architecture)."""
    return SoloGeometry(
        grids=tuple(int(grid) for grid in grids),
        scale_ranges=tuple((int(low), int(high)) for low, high in scale_ranges),
        level_strides=LEVEL_STRIDES,
        mask_stride=MASK_STRIDE,
    )


def check_solo_config(cfg: SoloConfig) -> None:
    """Raise ConfigError for SOLOv2 settings the head cannot be built with."""
    if len(cfg.grids) != NUM_LEVELS or len(cfg.scale_ranges) != NUM_LEVELS:
        raise ConfigError(
            f"solo.grids and solo.scale_ranges need {NUM_LEVELS} entries each (one per level), "
            f"got {len(cfg.grids)} and {len(cfg.scale_ranges)}"
        )
    for name in ("head_channels", "kernel_dim", "mask_feature_channels"):
        value = getattr(cfg, name)
        if value % GROUP_NORM_GROUPS:
            raise ConfigError(f"solo.{name} = {value} must be a multiple of {GROUP_NORM_GROUPS} (GroupNorm groups)")
