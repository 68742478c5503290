"""Typed containers passed between data, models, post-processing and evaluation."""

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
class Instances:
    """Instance predictions of one image, sorted by descending score.

    masks: Tensor[N, H, W] bool. scores: Tensor[N] float in [0, 1]. classes: Tensor[N] int64 thing index 0-7.
    mask_logits: Tensor[N, h, w] float SOLOv2 mask logits covering the same image (any resolution, typically the
    stride-4 mask features cropped to the unpadded image; fusion resizes them bilinearly), or None for exported
    binary masks.
    """

    masks: Tensor
    scores: Tensor
    classes: Tensor
    mask_logits: Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class PanopticPrediction:
    """A panoptic result in Cityscapes format: ids int32[H, W] (0 = void; thing id = labelId·1000 + k; stuff id =
    labelId) and segments_info entries with id, category_id (label id), area, bbox [x, y, w, h], iscrowd."""

    ids: np.ndarray
    segments_info: list[dict[str, Any]] = field(default_factory=list)


#: `update(description, done, total)`: how library functions report progress (the CLI draws a rich bar)
ProgressCallback = Callable[[str, int, int], None]
