"""The criterion (DETR's shape): raw network outputs + a batch's targets → weighted loss terms `loss_<head>_<term>`.

Each head has its own criterion behind one interface (instance criteria take the outputs, the per-image masks and
classes and the ignore map), so another instance head adds its criterion here without touching SOLOv2's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lpsctl.config import Config
from lpsctl.losses.maskrcnn import MaskRCNNCriterion
from lpsctl.losses.semantic import SemanticCriterion
from lpsctl.losses.solov2 import SOLOv2Criterion
from lpsctl.structures import Batch, InstanceGeometry, MaskRCNNGeometry, PanopticOutputs, SoloGeometry

#: `(instance outputs, masks per image, classes per image, ignore) -> loss terms`
InstanceCriterion = Callable[..., dict[str, Tensor]]


class PanopticCriterion:
    """The loss terms of every head present; their sum is the training objective."""

    def __init__(self, *, semantic: SemanticCriterion | None, instance: InstanceCriterion | None) -> None:
        self.semantic = semantic
        self.instance = instance

    def __call__(self, outputs: PanopticOutputs, batch: Batch) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        if (outputs.semantic is None) != (self.semantic is None):
            raise ValueError("the criterion and the network disagree about the semantic head")
        if (outputs.instance is None) != (self.instance is None):
            raise ValueError("the criterion and the network disagree about the instance head")
        if self.semantic is not None and outputs.semantic is not None:
            losses |= self.semantic(outputs.semantic, batch.semantic)
        if self.instance is not None and outputs.instance is not None:
            losses |= self.instance(outputs.instance, batch.masks, batch.classes, batch.ignore)
        return losses


def build_criterion(config: Config, *, semantic: bool, instance_geometry: InstanceGeometry | None) -> PanopticCriterion:
    """The criterion of a network with a semantic head (`semantic`) and the instance head whose geometry is given
    (None: no instance head); weights and loss parameters from `config.semantic` and `config.solo`/`maskrcnn`."""
    semantic_criterion = None
    if semantic:
        semantic_criterion = SemanticCriterion(
            ohem_fraction=config.semantic.ohem_fraction, loss_weight=config.semantic.loss_weight
        )
    instance_criterion: InstanceCriterion | None = None
    if isinstance(instance_geometry, SoloGeometry):
        solo = config.solo
        instance_criterion = SOLOv2Criterion(
            instance_geometry,
            sigma=solo.sigma,
            focal_alpha=solo.focal_alpha,
            focal_gamma=solo.focal_gamma,
            category_weight=solo.loss_category_weight,
            mask_weight=solo.loss_mask_weight,
            loss_weight=solo.loss_weight,
        )
    elif isinstance(instance_geometry, MaskRCNNGeometry):
        maskrcnn = config.maskrcnn
        instance_criterion = MaskRCNNCriterion(
            rpn_box_beta=maskrcnn.rpn_box_beta, box_beta=maskrcnn.box_beta, loss_weight=maskrcnn.loss_weight
        )
    return PanopticCriterion(semantic=semantic_criterion, instance=instance_criterion)
