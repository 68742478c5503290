"""Typed containers passed between data, models, criteria, post-processors and evaluation (a leaf module: it
imports no other lpsctl part)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class Sample:
    """One training/validation example after transforms.

    image: Tensor[3, H, W] float32, normalised. semantic: Tensor[H, W] int64 train ids, 255 = ignore.
    masks: Tensor[N, H, W] bool, one per thing instance. classes: Tensor[N] int64 thing class index 0-7.
    ignore: Tensor[H, W] bool, crowd regions and padding (no SOLOv2 supervision there).
    image_id: `{city}_{seq:06d}_{frame:06d}`. original_size: (height, width) of the file on disk.
    """

    image: Tensor
    semantic: Tensor
    masks: Tensor
    classes: Tensor
    ignore: Tensor
    image_id: str
    original_size: tuple[int, int]


@dataclass
class Batch:
    """Collated samples padded to a common size (multiple of 32): images Tensor[B, 3, H, W], semantic Tensor[B, H, W]
    (255 in padding), ignore Tensor[B, H, W] (True in padding); masks/classes stay per image; image_sizes are the
    (height, width) before padding."""

    images: Tensor
    semantic: Tensor
    ignore: Tensor
    masks: list[Tensor]
    classes: list[Tensor]
    image_ids: list[str]
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            images=self.images.to(device, non_blocking=True),
            semantic=self.semantic.to(device, non_blocking=True),
            ignore=self.ignore.to(device, non_blocking=True),
            masks=[m.to(device, non_blocking=True) for m in self.masks],
            classes=[c.to(device, non_blocking=True) for c in self.classes],
            image_ids=self.image_ids,
            image_sizes=self.image_sizes,
            original_sizes=self.original_sizes,
        )


@dataclass
class SoloOutputs:
    """Raw SOLOv2 head outputs. category_per_level: Tensor[B, C, S_i, S_i] logits (pre-sigmoid); kernel_per_level:
    Tensor[B, D, S_i, S_i] dynamic kernels; mask_features: Tensor[B, E, H/4, W/4] with E = D."""

    category_per_level: list[Tensor]
    kernel_per_level: list[Tensor]
    mask_features: Tensor

    def float(self) -> SoloOutputs:
        """The same outputs in float32 (losses and decoding; outputs may be fp16/bf16 under autocast)."""
        return SoloOutputs(
            category_per_level=[x.float() for x in self.category_per_level],
            kernel_per_level=[x.float() for x in self.kernel_per_level],
            mask_features=self.mask_features.float(),
        )


def dynamic_mask_logits(kernels: Tensor, mask_features: Tensor) -> Tensor:
    """SOLOv2's dynamic 1×1 convolution of one image's mask features with each kernel.

    kernels: Tensor[P, D]; mask_features: Tensor[D, h, w] → mask logits Tensor[P, h, w].
    """
    return torch.einsum("pd,dhw->phw", kernels, mask_features)


@dataclass(frozen=True)
class SoloGeometry:
    """Where the SOLOv2 head's grid levels sit (read from the head, never hard-coded elsewhere): grids S per level,
    the instance scale range sqrt(w·h) in input pixels that each level is assigned, each level's nominal stride (the
    minimum stride-4 mask area a candidate of that level needs at inference) and the mask features' stride."""

    grids: tuple[int, ...]
    scale_ranges: tuple[tuple[int, int], ...]
    level_strides: tuple[int, ...]
    mask_stride: int


@dataclass(frozen=True)
class MaskRCNNGeometry:
    """What the Mask R-CNN head's criterion and decoder need to know of it: the FPN strides it reads and the side of
    its square mask logits (28: RoIAlign 14×14, then a ×2 transposed conv)."""

    level_strides: tuple[int, ...]
    mask_size: int


@dataclass
class InstanceTargets:
    """One image's ground truth as a two-stage head samples it during training: masks Tensor[N, H, W] bool at the
    padded input size, classes Tensor[N] int64 thing index 0-7."""

    masks: Tensor
    classes: Tensor


@dataclass
class MaskRCNNTraining:
    """The Mask R-CNN head's training outputs: its predictions for the anchors and RoIs it sampled, beside their
    targets (a two-stage head samples its second stage's RoIs from the ground truth inside forward; the loss
    arithmetic stays in the criterion).

    rpn_logits/rpn_labels: Tensor[A] objectness logits and 0/1 labels of the sampled anchors; rpn_deltas/rpn_targets:
    Tensor[A_pos, 4] of the positive ones (encoded with the RPN's box coder). class_logits: Tensor[R, 9] of the sampled
    RoIs, class_labels: Tensor[R] (0 = background, c + 1 = thing c); box_deltas/box_targets: Tensor[R_pos, 4] of the
    positive RoIs (their labelled class's regression). mask_logits/mask_targets: Tensor[M, 28, 28] of the positive RoIs
    (their labelled class's mask; targets are the GT masks RoI-aligned to the proposal), mask_valid: Tensor[M] bool
    (False only for the stand-in RoI of an image batch without positives, which keeps every parameter in the graph).
    """

    rpn_logits: Tensor
    rpn_labels: Tensor
    rpn_deltas: Tensor
    rpn_targets: Tensor
    class_logits: Tensor
    class_labels: Tensor
    box_deltas: Tensor
    box_targets: Tensor
    mask_logits: Tensor
    mask_targets: Tensor
    mask_valid: Tensor


@dataclass
class Detections:
    """The Mask R-CNN head's eval outputs, per image (after box decoding, per-class NMS and the score threshold, which
    a two-stage head needs before its mask branch): boxes Tensor[N, 4] (x0, y0, x1, y1) in padded-input pixels,
    scores Tensor[N], classes Tensor[N] thing index 0-7, mask_logits Tensor[N, 28, 28] of each box's class."""

    boxes: list[Tensor]
    scores: list[Tensor]
    classes: list[Tensor]
    mask_logits: list[Tensor]


#: where an instance head's levels sit, for its criterion and decoder (None: no instance head)
InstanceGeometry = SoloGeometry | MaskRCNNGeometry
#: an instance head's raw outputs: SOLOv2's grids, or Mask R-CNN's sampled predictions (training) / detections (eval)
InstanceOutputs = SoloOutputs | MaskRCNNTraining | Detections


@dataclass
class PanopticOutputs:
    """Raw network outputs: semantic logits Tensor[B, 19, H, W] at input resolution (None without a semantic head)
    and the instance head's raw outputs (None without an instance head)."""

    semantic: Tensor | None
    instance: InstanceOutputs | None


@dataclass
class Instances:
    """Instance predictions of one image, sorted by descending score.

    masks: Tensor[N, H, W] bool. scores: Tensor[N] float in [0, 1]. classes: Tensor[N] int64 thing index 0-7.
    mask_logits: Tensor[N, h, w] float mask logits covering the same image (any resolution, typically the
    stride-4 mask features cropped to the unpadded image; fusion resizes them bilinearly), or None for exported
    binary masks. boxes: Tensor[N, 4] float (x0, y0, x1, y1) detection boxes in image pixels enclosing each mask, from
    a box-based head (Mask R-CNN: fusion's ML_B fills the detection box), else None (ML_B fills the mask's box).
    """

    masks: Tensor
    scores: Tensor
    classes: Tensor
    mask_logits: Tensor | None = None
    boxes: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class Prediction:
    """Per-image inference result: semantic logits Tensor[19, H0, W0] at the original size (None without a semantic
    head) and the instances (None without an instance head)."""

    image_id: str
    semantic_logits: Tensor | None
    instances: Instances | None


@dataclass
class PanopticPrediction:
    """A panoptic result in Cityscapes format: ids int32[H, W] (0 = void; thing id = labelId·1000 + k; stuff id =
    labelId) and segments_info entries with id, category_id (label id), area, bbox [x, y, w, h], iscrowd."""

    ids: np.ndarray
    segments_info: list[dict[str, Any]] = field(default_factory=list)


#: `update(description, done, total)`: how library functions report progress (the CLI draws a rich bar)
ProgressCallback = Callable[[str, int, int], None]
