"""Semantic loss of EfficientPS (SPEC §3.4): pixel-wise cross-entropy with online hard example mining, i.e. the mean
over the hardest fraction of valid pixels of the batch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lpsctl.labels import IGNORE


def ohem_cross_entropy(logits: Tensor, target: Tensor, *, fraction: float = 0.25, ignore_index: int = IGNORE) -> Tensor:
    """Mean cross-entropy of the `fraction` of valid pixels with the highest loss, over the whole batch.

    Args:
        logits: Tensor[B, C, H, W], raw class scores (any float dtype; the loss is computed in float32).
        target: Tensor[B, H, W] int64 class ids in [0, C) or `ignore_index`.
        fraction: share of the valid pixels kept, in (0, 1]; at least one pixel is kept (floor, then ≥ 1).
        ignore_index: target value of pixels that never contribute.

    Returns:
        A float32 scalar. With no valid pixel it is a zero that stays connected to `logits` (backward works and
        gives zero gradients), so a batch of unlabelled crops does not break the training step.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits [B, C, H, W] and target [B, H, W] of the same B, H, W; "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point:
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}")

    pixel_losses = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    num_valid = int(valid.sum())
    if num_valid == 0:
        return logits.float().sum() * 0.0
    num_kept = max(1, int(num_valid * fraction))
    # ignored pixels have loss 0; -1 keeps them below every valid pixel (losses are ≥ 0) since num_kept ≤ num_valid
    candidates = pixel_losses.masked_fill(~valid, -1.0).flatten()
    return candidates.topk(num_kept, sorted=False).values.mean()


class SemanticCriterion:
    """{"loss_semantic_ce"}: OHEM cross-entropy of the semantic logits × loss_weight."""

    def __init__(self, *, ohem_fraction: float = 0.25, loss_weight: float = 1.0, ignore_index: int = IGNORE) -> None:
        self.ohem_fraction, self.loss_weight, self.ignore_index = ohem_fraction, loss_weight, ignore_index

    def __call__(self, logits: Tensor, semantic: Tensor) -> dict[str, Tensor]:
        """logits: Tensor[B, C, H, W]; semantic: Tensor[B, H, W] int64 train ids (255 ignore)."""
        loss = ohem_cross_entropy(logits, semantic, fraction=self.ohem_fraction, ignore_index=self.ignore_index)
        return {"loss_semantic_ce": self.loss_weight * loss}
