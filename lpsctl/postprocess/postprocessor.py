"""The post-processor (DETR's shape): raw network outputs → per-image predictions (semantic logits at the original
size, and the instance head's decoded instances). Each instance head has its decoder behind one interface
(`(outputs, image_sizes, original_sizes) -> list[Instances]`), so another head adds its decoder here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from lpsctl.config import Config
from lpsctl.postprocess.maskrcnn_decode import MaskRCNNPostProcessor
from lpsctl.postprocess.solov2_decode import SOLOv2PostProcessor
from lpsctl.structures import (
    InstanceGeometry,
    Instances,
    MaskRCNNGeometry,
    PanopticOutputs,
    Prediction,
    SoloGeometry,
)

#: `(instance outputs, image sizes before padding, original sizes) -> Instances per image`
InstanceDecoder = Callable[..., list[Instances]]


class PanopticPostProcessor:
    def __init__(self, *, instance: InstanceDecoder | None) -> None:
        self.instance = instance

    @torch.no_grad()
    def __call__(
        self,
        outputs: PanopticOutputs,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        image_ids: list[str],
    ) -> list[Prediction]:
        """Crop each image's padding, resize semantic logits (float32) to its original size, decode instances."""
        instances: list[Instances | None] = [None] * len(image_ids)
        if outputs.instance is not None:
            if self.instance is None:
                raise ValueError("the network has an instance head but the post-processor no decoder for it")
            instances = list(self.instance(outputs.instance, image_sizes, original_sizes))
        return [
            Prediction(
                image_id=image_id,
                semantic_logits=None
                if outputs.semantic is None
                else original_size_logits(outputs.semantic[index], image_sizes[index], original_sizes[index]),
                instances=instances[index],
            )
            for index, image_id in enumerate(image_ids)
        ]


def original_size_logits(logits: Tensor, image_size: tuple[int, int], original_size: tuple[int, int]) -> Tensor:
    """Tensor[C, H_pad, W_pad] logits of one padded input → Tensor[C, H0, W0] float32: the unpadded
    image_size (height, width) cropped, then resized bilinearly to original_size."""
    height, width = image_size
    cropped = logits[None, :, :height, :width].float()
    return F.interpolate(cropped, size=original_size, mode="bilinear", align_corners=False)[0]


def build_postprocessor(config: Config, *, instance_geometry: InstanceGeometry | None) -> PanopticPostProcessor:
    """The post-processor of a network whose instance head has `instance_geometry` (None: no instance head);
    decoding thresholds from `config.solo` (Mask R-CNN's score threshold and NMS run in its head)."""
    decoder: InstanceDecoder | None = None
    if isinstance(instance_geometry, SoloGeometry):
        solo = config.solo
        decoder = SOLOv2PostProcessor(
            instance_geometry,
            score_threshold=solo.score_threshold,
            mask_threshold=solo.mask_threshold,
            nms_pre=solo.nms_pre,
            update_threshold=solo.update_threshold,
            max_per_image=solo.max_per_image,
            nms_kernel=solo.nms_kernel,
            nms_sigma=solo.nms_sigma,
        )
    elif isinstance(instance_geometry, MaskRCNNGeometry):
        decoder = MaskRCNNPostProcessor(instance_geometry, mask_threshold=config.maskrcnn.mask_threshold)
    return PanopticPostProcessor(instance=decoder)
