"""The composed network (SPEC §1, §3): EfficientNet backbone → 2-way FPN → semantic head and/or an instance head.

`forward` returns raw head outputs in train and eval mode; the criterion (`lpsctl.losses.criterion`) and the
post-processor (`lpsctl.postprocess.postprocessor`) are separate objects, as in DETR.
"""

from __future__ import annotations

from torch import Tensor, nn

from lpsctl.config import Config
from lpsctl.labels import NUM_CLASSES
from lpsctl.models.backbone import EfficientNetBackbone
from lpsctl.models.fpn import TwoWayFPN
from lpsctl.models.maskrcnn import LEVEL_STRIDES as MASKRCNN_STRIDES
from lpsctl.models.maskrcnn import MASK_SIZE, MaskRCNNHead
from lpsctl.models.norm import active_norm_name, make_norm
from lpsctl.models.semantic_head import SemanticHead
from lpsctl.models.solov2 import SOLOv2Head, solo_geometry
from lpsctl.structures import InstanceGeometry, InstanceTargets, MaskRCNNGeometry, PanopticOutputs


class PanopticNet(nn.Module):
    def __init__(
        self,
        backbone: EfficientNetBackbone,
        fpn: TwoWayFPN,
        semantic_head: SemanticHead | None,
        instance_head: SOLOv2Head | MaskRCNNHead | None,
        *,
        norm_name: str = "torch",
    ) -> None:
        super().__init__()
        if semantic_head is None and instance_head is None:
            raise ValueError("PanopticNet needs at least one head")
        self.backbone = backbone
        self.fpn = fpn
        self.semantic_head = semantic_head
        self.instance_head = instance_head
        self.norm_name = norm_name

    @property
    def instance_geometry(self) -> InstanceGeometry | None:
        """Where the instance head's levels sit (for the criterion and post-processor), or None without one."""
        return None if self.instance_head is None else self.instance_head.geometry

    def forward(self, images: Tensor, targets: list[InstanceTargets] | None = None) -> PanopticOutputs:
        """Raw head outputs. targets: the ground truth per image, which a two-stage instance head (Mask R-CNN) samples
        its RoIs from in training; SOLOv2 assigns its targets in the criterion and takes none."""
        features = self.fpn(self.backbone(images))
        semantic = self.semantic_head(features) if self.semantic_head is not None else None
        instance = None
        if isinstance(self.instance_head, MaskRCNNHead):
            instance = self.instance_head(features, targets)
        elif self.instance_head is not None:
            instance = self.instance_head(features)
        return PanopticOutputs(semantic=semantic, instance=instance)

    @property
    def needs_targets(self) -> bool:
        """Whether forward needs `targets` in training (a two-stage instance head)."""
        return isinstance(self.instance_head, MaskRCNNHead)


def instance_geometry(config: Config) -> InstanceGeometry | None:
    """The geometry of the instance head `config` describes (what `PanopticNet.instance_geometry` reports), for
    running an exported network without building the model."""
    head = config.model.instance_head
    if head == "solov2":
        return solo_geometry(config.solo.grids, config.solo.scale_ranges)
    if head == "maskrcnn":
        return MaskRCNNGeometry(level_strides=MASKRCNN_STRIDES, mask_size=MASK_SIZE)
    return None


def build_model(config: Config) -> PanopticNet:
    """The network described by `config.model` and the sections of its heads (`semantic`, `solo` or `maskrcnn`)."""
    model_config = config.model
    norm_layer = make_norm(model_config.norm)
    backbone = EfficientNetBackbone(
        model_config.backbone,
        norm_layer=norm_layer,
        pretrained=model_config.pretrained,
        weights_path=model_config.backbone_weights,
        drop_path_rate=model_config.drop_path_rate,
    )
    fpn = TwoWayFPN(backbone.out_channels, model_config.fpn_channels, norm_layer=norm_layer)
    semantic_head = None
    if model_config.semantic_head:
        semantic_head = SemanticHead(
            model_config.fpn_channels,
            NUM_CLASSES,
            lsfe_channels=config.semantic.lsfe_channels,
            dpc_dilations=config.semantic.dpc_dilations,
            norm_layer=norm_layer,
        )
    instance_head: SOLOv2Head | MaskRCNNHead | None = None
    if model_config.instance_head == "solov2":
        instance_head = SOLOv2Head.from_config(config.solo, model_config.fpn_channels)
    elif model_config.instance_head == "maskrcnn":
        instance_head = MaskRCNNHead(config.maskrcnn, model_config.fpn_channels, norm_layer=norm_layer)
    return PanopticNet(backbone, fpn, semantic_head, instance_head, norm_name=active_norm_name(model_config.norm))
