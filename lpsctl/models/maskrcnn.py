"""EfficientPS's original instance head (SPEC §3.8): Mask R-CNN on the 2-way FPN's P4-P32, composed from
torchvision's detection parts (anchor generator, RPN head and proposal filter, box coder, matchers, balanced samplers,
multi-scale RoIAlign, box decoding and NMS); the mask head has the separable convs and the project's norm.

`forward(features, targets)` runs the network and, in training, the target assignment and sampling that a two-stage
head needs before its second stage; it returns the sampled predictions beside their targets (`MaskRCNNTraining`)
and leaves the loss arithmetic to `lpsctl.losses.maskrcnn`. In eval mode it returns `Detections` (decoded boxes after
per-class NMS, with each box's 28×28 mask logits); pasting them into the image is the post-processor's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, project_masks_on_boxes
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import MultiScaleRoIAlign, masks_to_boxes

from lpsctl.config import MaskRCNNConfig
from lpsctl.labels import NUM_THING_CLASSES
from lpsctl.models.fpn import SeparableConv, init_conv
from lpsctl.structures import Detections, InstanceTargets, MaskRCNNGeometry, MaskRCNNTraining

#: the FPN levels the head reads: P4, P8, P16, P32 (no P64 level, as in EfficientPS)
LEVEL_STRIDES = (4, 8, 16, 32)
_LEVEL_NAMES = ("p4", "p8", "p16", "p32")
MASK_SIZE = 28


class SeparableRPNHead(nn.Module):
    """The official EfficientPS RPN head: separable 3×3 conv + norm (leaky ReLU), then 1×1 objectness and box convs;
    the interface of torchvision's `RPNHead` (`forward(levels) -> (objectness per level, deltas per level)`)."""

    def __init__(self, channels: int, num_anchors: int, *, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.conv = SeparableConv(channels, channels, norm_layer=norm_layer)
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, 1)
        for layer in (self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(cast(Tensor, layer.bias))

    def forward(self, levels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        hidden = [self.conv(level) for level in levels]
        return [self.cls_logits(h) for h in hidden], [self.bbox_pred(h) for h in hidden]


class MaskHead(nn.Sequential):
    """RoI features Tensor[R, C, 14, 14] → mask logits Tensor[R, classes + 1, 28, 28]: separable 3×3 convs + norm
    (leaky ReLU), a 2×2 stride-2 transposed conv + ReLU, a 1×1 conv (SPEC §3.8)."""

    def __init__(
        self, in_channels: int, channels: int, convs: int, classes: int, *, norm_layer: Callable[..., nn.Module]
    ) -> None:
        layers: list[nn.Module] = [
            SeparableConv(in_channels if i == 0 else channels, channels, norm_layer=norm_layer) for i in range(convs)
        ]
        upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        layers += [upsample, nn.ReLU(inplace=True), nn.Conv2d(channels, classes + 1, 1)]
        super().__init__(*layers)
        init_conv(self)
        nn.init.kaiming_normal_(upsample.weight, nonlinearity="relu")


class MaskRCNNHead(nn.Module):
    """RPN + box head + mask head on [P4, P8, P16, P32] (each Tensor[B, in_channels, H/s, W/s]).

    forward(features, targets) → MaskRCNNTraining in training (targets required), Detections in eval mode.
    """

    def __init__(
        self,
        cfg: MaskRCNNConfig,
        in_channels: int,
        *,
        norm_layer: Callable[..., nn.Module],
        num_classes: int = NUM_THING_CLASSES,
    ) -> None:
        super().__init__()
        check_maskrcnn_config(cfg)
        self.num_classes = num_classes
        self.geometry = MaskRCNNGeometry(level_strides=LEVEL_STRIDES, mask_size=MASK_SIZE)
        anchors = AnchorGenerator(
            sizes=tuple((size,) for size in cfg.anchor_sizes), aspect_ratios=(cfg.aspect_ratios,) * len(LEVEL_STRIDES)
        )
        per_location = len(cfg.aspect_ratios)
        rpn_head: nn.Module = (
            RPNHead(in_channels, per_location)
            if cfg.rpn_conv == "standard"
            else SeparableRPNHead(in_channels, per_location, norm_layer=norm_layer)
        )
        self.rpn = RegionProposalNetwork(
            anchors,
            rpn_head,
            fg_iou_thresh=cfg.rpn_positive_iou,
            bg_iou_thresh=cfg.rpn_negative_iou,
            batch_size_per_image=cfg.rpn_batch_per_image,
            positive_fraction=cfg.rpn_positive_fraction,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_train, "testing": cfg.rpn_pre_nms_test},
            post_nms_top_n={"training": cfg.rpn_post_nms_train, "testing": cfg.rpn_post_nms_test},
            nms_thresh=cfg.rpn_nms,
        )
        box_pool = MultiScaleRoIAlign(list(_LEVEL_NAMES), output_size=7, sampling_ratio=2)
        mask_pool = MultiScaleRoIAlign(list(_LEVEL_NAMES), output_size=14, sampling_ratio=2)
        self.roi_heads = RoIHeads(
            box_pool,
            TwoMLPHead(in_channels * 7 * 7, cfg.representation),
            FastRCNNPredictor(cfg.representation, num_classes + 1),
            fg_iou_thresh=cfg.roi_positive_iou,
            bg_iou_thresh=cfg.roi_positive_iou,
            batch_size_per_image=cfg.roi_batch_per_image,
            positive_fraction=cfg.roi_positive_fraction,
            bbox_reg_weights=cfg.box_weights,
            score_thresh=cfg.score_threshold,
            nms_thresh=cfg.nms_threshold,
            detections_per_img=cfg.max_per_image,
            mask_roi_pool=mask_pool,
            mask_head=MaskHead(in_channels, cfg.mask_channels, cfg.mask_convs, num_classes, norm_layer=norm_layer),
            mask_predictor=nn.Identity(),  # the mask head ends in its predictor
        )

    def forward(
        self, features: list[Tensor], targets: list[InstanceTargets] | None = None
    ) -> MaskRCNNTraining | Detections:
        if len(features) != len(LEVEL_STRIDES):
            raise ValueError(f"the Mask R-CNN head reads {len(LEVEL_STRIDES)} FPN levels, got {len(features)}")
        levels = dict(zip(_LEVEL_NAMES, features, strict=True))
        batch, _, height, width = features[0].shape
        size = (height * LEVEL_STRIDES[0], width * LEVEL_STRIDES[0])
        images = ImageList(features[0].new_empty((batch, 0, *size)), [size] * batch)
        if not self.training:
            return self._detect(levels, images)
        if targets is None or len(targets) != batch:
            raise ValueError("the Mask R-CNN head needs one InstanceTargets per image in training")
        return self._sample_and_predict(levels, images, [_torchvision_target(t) for t in targets])

    def _proposals(self, levels: dict[str, Tensor], images: ImageList) -> tuple[list[Tensor], Tensor, Tensor, list]:
        """RPN forward and proposal filtering: proposals per image, flat objectness logits and deltas, anchors."""
        rpn = self.rpn
        objectness, deltas = rpn.head(list(levels.values()))
        # anchors, decoding and proposal filtering in float32 under fp16/bf16 autocast (the anchor generator takes its
        # dtype from the maps it is given, and only their sizes: zero-stride float32 views of the levels' shapes)
        shapes = [images.tensors.new_zeros((), dtype=torch.float32).expand(level.shape) for level in levels.values()]
        anchors = rpn.anchor_generator(images, shapes)
        per_level = [int(o[0].numel()) for o in objectness]
        objectness, deltas = (x.float() for x in concat_box_prediction_layers(objectness, deltas))
        decoded = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        proposals, _ = rpn.filter_proposals(decoded, objectness, images.image_sizes, per_level)
        return proposals, objectness.flatten(), deltas, anchors

    def _sample_and_predict(
        self, levels: dict[str, Tensor], images: ImageList, targets: list[dict[str, Tensor]]
    ) -> MaskRCNNTraining:
        rpn, heads = self.rpn, self.roi_heads
        proposals, objectness, deltas, anchors = self._proposals(levels, images)
        anchor_labels, matched_boxes = rpn.assign_targets_to_anchors(anchors, targets)
        anchor_targets = torch.cat(rpn.box_coder.encode(matched_boxes, anchors))
        positive, negative = (torch.cat(m).nonzero().flatten() for m in rpn.fg_bg_sampler(anchor_labels))
        sampled = torch.cat([positive, negative])

        rois, matched, labels, box_targets = heads.select_training_samples(proposals, targets)
        class_logits, box_deltas = self._box_predictions(levels, rois, images)
        labels_flat, box_targets_flat = torch.cat(labels), torch.cat(box_targets)
        positive_rois = (labels_flat > 0).nonzero().flatten()
        box_deltas = box_deltas.reshape(len(labels_flat), -1, 4)[positive_rois, labels_flat[positive_rois]]

        mask_logits, mask_targets, mask_valid = self._mask_predictions(levels, images, rois, matched, labels, targets)
        return MaskRCNNTraining(
            rpn_logits=objectness[sampled],
            rpn_labels=torch.cat(anchor_labels)[sampled],
            rpn_deltas=deltas[positive],
            rpn_targets=anchor_targets[positive],
            class_logits=class_logits,
            class_labels=labels_flat,
            box_deltas=box_deltas,
            box_targets=box_targets_flat[positive_rois],
            mask_logits=mask_logits,
            mask_targets=mask_targets,
            mask_valid=mask_valid,
        )

    def _box_predictions(self, levels: dict[str, Tensor], rois: list[Tensor], images: ImageList) -> tuple[Tensor, ...]:
        heads = self.roi_heads
        pooled = heads.box_roi_pool(levels, rois, images.image_sizes)
        return heads.box_predictor(heads.box_head(pooled))

    def _mask_predictions(
        self,
        levels: dict[str, Tensor],
        images: ImageList,
        rois: list[Tensor],
        matched: list[Tensor],
        labels: list[Tensor],
        targets: list[dict[str, Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mask logits of the positive RoIs' labelled classes and their RoI-aligned GT masks, Tensor[M, 28, 28] each.

        Without any positive RoI in the batch the first sampled RoI stands in (mask_valid False), so that every
        parameter takes part in every step (DDP needs it) while the loss is exactly zero."""
        positives = [label > 0 for label in labels]
        any_positive = bool(torch.cat(positives).any())
        if not any_positive:
            stand_in = next(index for index, label in enumerate(labels) if len(label))
            positives = [torch.zeros_like(keep) for keep in positives]
            positives[stand_in][0] = True
        boxes = [roi[keep] for roi, keep in zip(rois, positives, strict=True)]
        logits = self.roi_heads.mask_head(self.roi_heads.mask_roi_pool(levels, boxes, images.image_sizes))
        classes = torch.cat([label[keep] for label, keep in zip(labels, positives, strict=True)])
        mask_targets = torch.cat(
            [
                project_masks_on_boxes(t["masks"], box, index[keep], MASK_SIZE)
                if len(t["masks"])
                else box.new_zeros((len(box), MASK_SIZE, MASK_SIZE))
                for t, box, index, keep in zip(targets, boxes, matched, positives, strict=True)
            ]
        )
        selected = logits[torch.arange(len(classes), device=logits.device), classes]
        valid = torch.full((len(classes),), any_positive, dtype=torch.bool, device=logits.device)
        return selected, mask_targets, valid

    def _detect(self, levels: dict[str, Tensor], images: ImageList) -> Detections:
        heads = self.roi_heads
        proposals, _, _, _ = self._proposals(levels, images)
        class_logits, box_deltas = self._box_predictions(levels, proposals, images)
        boxes, scores, labels = heads.postprocess_detections(
            class_logits.float(), box_deltas.float(), proposals, images.image_sizes
        )
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            empty = class_logits.new_zeros((0, MASK_SIZE, MASK_SIZE)).float()
            return Detections(boxes, scores, [label - 1 for label in labels], [empty] * len(boxes))
        logits = heads.mask_head(heads.mask_roi_pool(levels, boxes, images.image_sizes))
        classes = torch.cat(labels)
        selected = logits[torch.arange(len(classes), device=logits.device), classes].float()
        return Detections(boxes, scores, [label - 1 for label in labels], list(selected.split(counts)))


def _torchvision_target(target: InstanceTargets) -> dict[str, Tensor]:
    """boxes (x0, y0, x1, y1) enclosing each mask's pixels (pixel edges, so a one-pixel mask has area 1), labels
    1-8 (0 is background), masks — torchvision's target dict."""
    masks = target.masks.bool()
    boxes = masks_to_boxes(masks).float() if len(masks) else masks.new_zeros((0, 4), dtype=torch.float32)
    boxes[:, 2:] += 1
    return {"boxes": boxes, "labels": target.classes.long() + 1, "masks": masks.to(torch.uint8)}


def check_maskrcnn_config(cfg: MaskRCNNConfig) -> None:
    """ValueError for settings the head cannot be built with (the config's range checks name the key)."""
    if len(cfg.anchor_sizes) != len(LEVEL_STRIDES):
        raise ValueError(
            f"maskrcnn.anchor_sizes needs {len(LEVEL_STRIDES)} sizes (one per level P4-P32), got {cfg.anchor_sizes}"
        )
    if cfg.mask_convs < 1 or cfg.mask_channels < 1 or cfg.representation < 1:
        raise ValueError("maskrcnn.mask_convs, mask_channels and representation must be positive")
