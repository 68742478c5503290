"""SOLOv2 losses (SPEC §3.5): sigmoid focal loss on the category grids, Dice loss on the masks of positive cells."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.ops import sigmoid_focal_loss

from lpsctl.labels import NUM_THING_CLASSES
from lpsctl.losses.solov2_targets import SoloTargets, assign_solov2_targets
from lpsctl.structures import SoloGeometry, SoloOutputs, dynamic_mask_logits

DICE_EPS = 0.001  # d = 1 − 2Σpq / (Σp² + Σq² + 2·0.001), as mmdetection's DiceLoss (eps 1e-3 on each sum)


def focal_loss_sum(logits: Tensor, labels: Tensor, weights: Tensor, *, alpha: float, gamma: float) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017) summed over weighted cells and classes.

    logits: Tensor[..., C] float; labels: Tensor[...] int64, C = background (all-zero one-hot);
    weights: Tensor[...] float, 0 excludes a cell. Returns a scalar.
    """
    num_classes = logits.shape[-1]
    one_hot = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(logits.dtype)
    per_element = sigmoid_focal_loss(logits, one_hot, alpha=alpha, gamma=gamma, reduction="none")
    return (per_element * weights[..., None]).sum()


def dice_loss(probabilities: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-mask Dice loss 1 − 2Σpq / (Σp² + Σq² + 2·eps), summed over pixels where `valid` is set.

    probabilities: Tensor[P, h, w] in [0, 1]; targets: Tensor[P, h, w] in [0, 1]; valid: Tensor[P, h, w] bool or
    None (all valid). Returns Tensor[P].
    """
    if valid is not None:
        probabilities = probabilities * valid
        targets = targets * valid
    probabilities, targets = probabilities.flatten(1), targets.flatten(1)
    intersection = (probabilities * targets).sum(dim=1)
    denominator = (probabilities * probabilities).sum(dim=1) + (targets * targets).sum(dim=1) + 2 * DICE_EPS
    return 1 - 2 * intersection / denominator


class SOLOv2Criterion:
    """SOLOv2 loss terms of one batch: {"loss_solo_category", "loss_solo_mask"}, each already weighted.

    `geometry` is the head's (grids and the scale range of each level); the weights and focal parameters are
    keyword arguments, as `build_criterion` passes them from `SoloConfig`.
    """

    def __init__(
        self,
        geometry: SoloGeometry,
        *,
        num_classes: int = NUM_THING_CLASSES,
        sigma: float = 0.2,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        category_weight: float = 1.0,
        mask_weight: float = 3.0,
        loss_weight: float = 1.0,
    ) -> None:
        self.geometry = geometry
        self.num_classes = num_classes
        self.sigma = sigma
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.category_weight, self.mask_weight, self.loss_weight = category_weight, mask_weight, loss_weight

    def __call__(
        self, outputs: SoloOutputs, masks: list[Tensor], classes: list[Tensor], ignore: Tensor | None
    ) -> dict[str, Tensor]:
        """outputs: the head's raw outputs for B images (any float dtype; losses in float32); masks[b]:
        Tensor[N_b, H, W] bool at the padded input size; classes[b]: Tensor[N_b] int64 in 0..C-1; ignore:
        Tensor[B, H, W] bool (crowd + padding) or None.

        loss_solo_category: focal sum over non-ignored cells / (num_pos + 1); loss_solo_mask: mean Dice over
        positive cells; each × its term weight × loss_weight (the joint-loss weight).
        """
        grids = self.geometry.grids
        if len(outputs.category_per_level) != len(grids):
            raise ValueError(f"{len(outputs.category_per_level)} category levels but the head has {len(grids)} grids")
        outputs = outputs.float()
        feature_height, feature_width = outputs.mask_features.shape[-2:]
        targets = assign_solov2_targets(
            masks,
            classes,
            ignore,
            grids=grids,
            scale_ranges=self.geometry.scale_ranges,
            sigma=self.sigma,
            num_classes=self.num_classes,
            mask_feature_size=(int(feature_height), int(feature_width)),
        )
        category = category_loss(outputs, targets, alpha=self.focal_alpha, gamma=self.focal_gamma)
        return {
            "loss_solo_category": self.loss_weight * self.category_weight * category,
            "loss_solo_mask": self.loss_weight * self.mask_weight * mask_loss(outputs, targets),
        }


def category_loss(outputs: SoloOutputs, targets: SoloTargets, *, alpha: float, gamma: float) -> Tensor:
    """Focal loss summed over all levels' non-ignored cells, normalised by num_pos + 1."""
    total = outputs.mask_features.new_zeros((), dtype=torch.float32)
    for logits, labels, ignored in zip(
        outputs.category_per_level, targets.labels_per_level, targets.ignored_per_level, strict=True
    ):
        cell_logits = logits.float().permute(0, 2, 3, 1)  # [B, S, S, C]
        weights = (~ignored).to(cell_logits.dtype)
        total = total + focal_loss_sum(cell_logits, labels, weights, alpha=alpha, gamma=gamma)
    return total / (targets.num_positive + 1)


def mask_loss(outputs: SoloOutputs, targets: SoloTargets) -> Tensor:
    """Mean Dice over positive cells of the dynamic-conv masks; 0 (with gradients) when there are none."""
    kernels = torch.cat(
        [
            level_kernels.permute(0, 2, 3, 1)[cells[:, 0], cells[:, 1], cells[:, 2]]
            for level_kernels, cells in zip(outputs.kernel_per_level, targets.positive_cells_per_level, strict=True)
        ]
    )  # [P, D]
    image_of = torch.cat([cells[:, 0] for cells in targets.positive_cells_per_level])
    instance_of = torch.cat(targets.positive_instance_per_level)
    if kernels.shape[0] == 0:
        # keep the graph connected so every parameter gets a (zero) gradient, e.g. for DDP
        connected = outputs.mask_features.float().sum() + sum(k.float().sum() for k in outputs.kernel_per_level)
        return connected * 0.0
    losses = []
    for image in image_of.unique().tolist():
        selected = image_of == image
        logits = dynamic_mask_logits(kernels[selected].float(), outputs.mask_features[image].float())
        image_targets = targets.masks[instance_of[selected]].float()
        valid = targets.valid[image].expand_as(image_targets)
        losses.append(dice_loss(logits.sigmoid(), image_targets, valid))
    return torch.cat(losses).mean()
