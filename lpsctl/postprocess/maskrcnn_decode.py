"""Decoding of the Mask R-CNN head's detections (SPEC §3.8): each box's 28×28 mask logits of its class pasted into
the image inside its box, zero outside (fusion's ML_A = logit_scale × these, SPEC §3.6), binarised at mask_threshold.

Boxes come in padded-input pixels; they are scaled to the original image (the unpadded input resized, as the
semantic logits are). Pasting is one `grid_sample` per chunk of detections, not a loop over boxes."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from lpsctl.structures import Detections, Instances, MaskRCNNGeometry

#: detections pasted at full resolution at once (bounds the sampling grid's memory: 8 × H × W × 2 floats)
_PASTE_CHUNK = 8


class MaskRCNNPostProcessor:
    """`(Detections, image sizes before padding, original sizes) -> list[Instances]`: masks Tensor[N, H0, W0] bool,
    mask_logits Tensor[N, ⌈H0/s⌉, ⌈W0/s⌉] at the mask-feature stride s of the geometry (4), as SOLOv2's are."""

    def __init__(self, geometry: MaskRCNNGeometry, *, mask_threshold: float = 0.5) -> None:
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        self.geometry = geometry
        self.logit_threshold = math.log(mask_threshold / (1 - mask_threshold))

    def __call__(
        self, outputs: Detections, image_sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]]
    ) -> list[Instances]:
        if not isinstance(outputs, Detections):
            raise ValueError(f"the Mask R-CNN decoder needs the head's detections, got {type(outputs).__name__}")
        if not len(outputs.boxes) == len(image_sizes) == len(original_sizes):
            raise ValueError(
                f"{len(outputs.boxes)} images of detections, {len(image_sizes)} image sizes, {len(original_sizes)} "
                "original sizes"
            )
        return [
            self._decode_image(boxes, scores, classes, logits, image_size, original_size)
            for boxes, scores, classes, logits, image_size, original_size in zip(
                outputs.boxes,
                outputs.scores,
                outputs.classes,
                outputs.mask_logits,
                image_sizes,
                original_sizes,
                strict=True,
            )
        ]

    def _decode_image(
        self,
        boxes: Tensor,
        scores: Tensor,
        classes: Tensor,
        logits: Tensor,
        image_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> Instances:
        order = torch.argsort(scores, descending=True, stable=True)
        boxes, scores, classes, logits = boxes[order].float(), scores[order], classes[order], logits[order].float()
        scale = boxes.new_tensor([original_size[1] / image_size[1], original_size[0] / image_size[0]]).repeat(2)
        boxes = boxes * scale
        height, width = original_size
        stride = self.geometry.level_strides[0]
        coarse = (-(-height // stride), -(-width // stride))
        masks = [torch.zeros((0, height, width), dtype=torch.bool, device=logits.device)]
        for start in range(0, len(boxes), _PASTE_CHUNK):
            chunk = slice(start, start + _PASTE_CHUNK)
            pasted = paste_in_boxes(logits[chunk], boxes[chunk], original_size, original_size)
            masks.append(pasted > self.logit_threshold)
        return Instances(
            masks=torch.cat(masks),
            scores=scores.float(),
            classes=classes.long(),
            mask_logits=paste_in_boxes(logits, boxes, coarse, original_size),
            boxes=boxes,
        )


def paste_in_boxes(logits: Tensor, boxes: Tensor, size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    """Tensor[N, m, m] logits, each stretched over its box Tensor[N, 4] (x0, y0, x1, y1 in pixels of an image of
    image_size) → Tensor[N, *size] on a grid of `size` cells covering that image: bilinear inside the box (pixel
    centres, align_corners=False; the border cells are held up to the box edge), exactly 0 outside."""
    count = len(boxes)
    if count == 0:
        return logits.new_zeros((0, *size))
    (rows, columns), (image_height, image_width) = size, image_size
    ys = (torch.arange(rows, device=boxes.device, dtype=torch.float32) + 0.5) * (image_height / rows)
    xs = (torch.arange(columns, device=boxes.device, dtype=torch.float32) + 0.5) * (image_width / columns)
    x0, y0, x1, y1 = (boxes[:, index, None] for index in range(4))
    u = (xs[None] - x0) / (x1 - x0).clamp(min=1e-6) * 2 - 1  # [N, W]
    v = (ys[None] - y0) / (y1 - y0).clamp(min=1e-6) * 2 - 1  # [N, H]
    grid = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1)  # [N, H, W, 2]
    pasted = F.grid_sample(logits[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
    inside = (u.abs() <= 1)[:, None, :] & (v.abs() <= 1)[:, :, None]
    return torch.where(inside, pasted, 0.0)
