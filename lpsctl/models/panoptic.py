"""The composed network (SPEC §1, §3): EfficientNet backbone → 2-way FPN → semantic head and/or SOLOv2 head.

`forward` returns raw head outputs in train and eval mode; `loss(...)` and `predict(...)` are separate calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpsctl.config import Config, SemanticConfig, SoloConfig
from lpsctl.losses.semantic import ohem_cross_entropy
from lpsctl.losses.solov2 import solov2_loss
from lpsctl.models.backbone import EfficientNetBackbone
from lpsctl.models.fpn import TwoWayFPN
from lpsctl.models.norm import active_norm_name, make_norm
from lpsctl.models.semantic_head import SemanticHead
from lpsctl.models.solov2 import SoloOutputs, SOLOv2Head
from lpsctl.postprocess.solov2_decode import decode_solov2
from lpsctl.structures import Instances


@dataclass
class PanopticOutputs:
    """Raw outputs: semantic logits Tensor[B, 19, H, W] at input resolution (None without a semantic head) and the
    SOLOv2 outputs (None without an instance head). Also readable as a mapping: `outputs["semantic"]`."""

    semantic: Tensor | None
    solo: SoloOutputs | None

    def __getitem__(self, key: str) -> Tensor | SoloOutputs | None:
        return getattr(self, key)


@dataclass
class Prediction:
    """Per-image inference result: semantic logits Tensor[19, H0, W0] at the original size (None without a semantic
    head) and the instances (None without an instance head)."""

    image_id: str
    semantic_logits: Tensor | None
    instances: Instances | None


class PanopticNet(nn.Module):
    def __init__(
        self,
        backbone: EfficientNetBackbone,
        fpn: TwoWayFPN,
        semantic_head: SemanticHead | None,
        instance_head: SOLOv2Head | None,
        *,
        semantic_config: SemanticConfig,
        solo_config: SoloConfig,
        norm_name: str = "torch",
    ) -> None:
        super().__init__()
        if semantic_head is None and instance_head is None:
            raise ValueError("PanopticNet needs at least one head")
        self.backbone = backbone
        self.fpn = fpn
        self.semantic_head = semantic_head
        self.instance_head = instance_head
        self.semantic_config = semantic_config
        self.solo_config = solo_config
        self.norm_name = norm_name

    def forward(self, images: Tensor) -> PanopticOutputs:
        features = self.fpn(self.backbone(images))
        semantic = self.semantic_head(features) if self.semantic_head is not None else None
        solo = self.instance_head(features) if self.instance_head is not None else None
        return PanopticOutputs(semantic=semantic, solo=solo)

    def loss(
        self,
        outputs: PanopticOutputs,
        semantic: Tensor,
        masks: list[Tensor],
        classes: list[Tensor],
        ignore: Tensor | None,
    ) -> dict[str, Tensor]:
        """Weighted loss terms `loss_<head>_<term>`; their sum is the training objective.

        semantic: Tensor[B, H, W] int64 train ids (255 ignore); masks/classes per image (SOLOv2 targets);
        ignore: Tensor[B, H, W] bool (crowd and padding) or None.
        """
        losses: dict[str, Tensor] = {}
        if outputs.semantic is not None:
            ce = ohem_cross_entropy(outputs.semantic.float(), semantic, fraction=self.semantic_config.ohem_fraction)
            losses["loss_semantic_ce"] = ce * self.semantic_config.loss_weight
        if outputs.solo is not None:
            solo = solov2_loss(_float_solo(outputs.solo), masks, classes, ignore, self.solo_config)
            losses.update({key: value * self.solo_config.loss_weight for key, value in solo.items()})
        return losses

    @torch.no_grad()
    def predict(
        self,
        outputs: PanopticOutputs,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        image_ids: list[str],
    ) -> list[Prediction]:
        """Decode raw outputs: crop each image's padding, resize to its original size, decode SOLOv2 instances."""
        instances: list[Instances | None] = [None] * len(image_ids)
        if outputs.solo is not None:
            instances = list(decode_solov2(_float_solo(outputs.solo), image_sizes, original_sizes, self.solo_config))
        predictions = []
        for index, image_id in enumerate(image_ids):
            logits = None
            if outputs.semantic is not None:
                height, width = image_sizes[index]
                cropped = outputs.semantic[index : index + 1, :, :height, :width].float()
                logits = F.interpolate(cropped, size=original_sizes[index], mode="bilinear", align_corners=False)[0]
            predictions.append(Prediction(image_id=image_id, semantic_logits=logits, instances=instances[index]))
        return predictions


def _float_solo(outputs: SoloOutputs) -> SoloOutputs:
    """Losses and decoding in float32 (outputs may be fp16/bf16 under autocast)."""
    return SoloOutputs(
        category_per_level=[x.float() for x in outputs.category_per_level],
        kernel_per_level=[x.float() for x in outputs.kernel_per_level],
        mask_features=outputs.mask_features.float(),
    )


def build_model(config: Config) -> PanopticNet:
    """The network described by `config.model`, `config.semantic` and `config.solo`."""
    model_config = config.model
    norm_layer = make_norm(model_config.norm)
    backbone = EfficientNetBackbone(
        model_config.backbone,
        norm_layer=norm_layer,
        pretrained=model_config.pretrained,
        weights_path=model_config.backbone_weights,
    )
    fpn = TwoWayFPN(backbone.out_channels, model_config.fpn_channels, norm_layer=norm_layer)
    semantic_head = None
    if model_config.semantic_head:
        semantic_head = SemanticHead(
            model_config.fpn_channels,
            config.semantic.num_classes,
            lsfe_channels=config.semantic.lsfe_channels,
            dpc_dilations=config.semantic.dpc_dilations,
            norm_layer=norm_layer,
        )
    instance_head = (
        SOLOv2Head.from_config(config.solo, model_config.fpn_channels) if model_config.instance_head else None
    )
    return PanopticNet(
        backbone,
        fpn,
        semantic_head,
        instance_head,
        semantic_config=config.semantic,
        solo_config=config.solo,
        norm_name=active_norm_name(model_config.norm),
    )
