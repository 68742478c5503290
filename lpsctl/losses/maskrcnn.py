"""The Mask R-CNN head's loss terms (SPEC §3.8) on the predictions and targets it sampled (`MaskRCNNTraining`):
BCE objectness + smooth-L1 (β 1/9) for the RPN, normalised by the sampled anchors; cross-entropy + smooth-L1 (β 1)
for the box head, normalised by the sampled RoIs; per-class BCE on the 28×28 masks of the positive RoIs."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from lpsctl.structures import MaskRCNNTraining


class MaskRCNNCriterion:
    """`(outputs, masks, classes, ignore) -> {loss_rpn_objectness, loss_rpn_box, loss_rcnn_class, loss_rcnn_box,
    loss_rcnn_mask}`, each × loss_weight. The ground truth already shaped the outputs (the head sampled from it), so
    the masks, classes and ignore map of the instance-criterion interface are not read again."""

    def __init__(self, *, rpn_box_beta: float = 1 / 9, box_beta: float = 1.0, loss_weight: float = 1.0) -> None:
        self.rpn_box_beta, self.box_beta, self.loss_weight = rpn_box_beta, box_beta, loss_weight

    def __call__(
        self, outputs: MaskRCNNTraining, masks: list[Tensor], classes: list[Tensor], ignore: Tensor | None
    ) -> dict[str, Tensor]:
        if not isinstance(outputs, MaskRCNNTraining):
            raise ValueError(
                f"the Mask R-CNN criterion needs the head's training outputs, got {type(outputs).__name__} "
                "(is the model in training mode?)"
            )
        terms = maskrcnn_losses(outputs, rpn_box_beta=self.rpn_box_beta, box_beta=self.box_beta)
        return {name: self.loss_weight * value for name, value in terms.items()}


def maskrcnn_losses(outputs: MaskRCNNTraining, *, rpn_box_beta: float, box_beta: float) -> dict[str, Tensor]:
    """The five unweighted loss terms (float32 whatever precision the head ran in)."""
    o = outputs
    sampled_anchors = max(len(o.rpn_labels), 1)
    rpn_box = F.smooth_l1_loss(o.rpn_deltas.float(), o.rpn_targets.float(), beta=rpn_box_beta, reduction="sum")
    sampled_rois = max(len(o.class_labels), 1)
    box = F.smooth_l1_loss(o.box_deltas.float(), o.box_targets.float(), beta=box_beta, reduction="sum")
    per_mask = F.binary_cross_entropy_with_logits(o.mask_logits.float(), o.mask_targets.float(), reduction="none").mean(
        dim=(1, 2)
    )
    valid = o.mask_valid.float()
    return {
        "loss_rpn_objectness": F.binary_cross_entropy_with_logits(o.rpn_logits.float(), o.rpn_labels.float()),
        "loss_rpn_box": rpn_box / sampled_anchors,
        "loss_rcnn_class": F.cross_entropy(o.class_logits.float(), o.class_labels),
        "loss_rcnn_box": box / sampled_rois,
        "loss_rcnn_mask": (per_mask * valid).sum() / valid.sum().clamp(min=1),
    }
