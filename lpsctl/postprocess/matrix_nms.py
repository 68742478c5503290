"""Matrix NMS (SOLOv2 §4.2, SPEC §3.5): every mask's score decays by its overlap with higher-scored same-class masks,
in one matrix computation instead of sequential suppression."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

# guards 0/0: two empty masks (union 0) and, for the linear kernel, f(compensate) = 0 when a mask duplicates another
_TINY = 1e-6


def mask_iou_matrix(masks: Tensor, mask_area: Tensor | None = None) -> Tensor:
    """Pairwise IoU of binary masks. masks: Tensor[N, H, W] bool; mask_area: Tensor[N] or None → Tensor[N, N]."""
    flat = masks.flatten(1).float()
    area = flat.sum(dim=1) if mask_area is None else mask_area.float()
    intersection = flat @ flat.T
    union = area[:, None] + area[None, :] - intersection
    return intersection / union.clamp(min=_TINY)


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    *,
    kernel: Literal["gaussian", "linear"] = "gaussian",
    sigma: float = 2.0,
    mask_area: Tensor | None = None,
) -> Tensor:
    """Decayed scores after Matrix NMS, following the SOLOv2 code.

    masks: Tensor[N, H, W] bool; labels: Tensor[N] int (only same-label masks decay each other); scores: Tensor[N]
    float, sorted in descending order; mask_area: Tensor[N] pixel counts (computed when None).
    With IoU_ij for i scored above j (same label, else 0) and compensate_i = max_k IoU_ki (the most i itself overlaps
    a higher-scored same-label mask), decay_j = min_i f(IoU_ij) / f(compensate_i), where i runs over all masks
    (terms with i not above j reduce to 1 / f(compensate_i) ≥ 1, and i = 0 gives f(IoU_0j) ≤ 1).
    f(x) = exp(−sigma·x²) (gaussian) or 1 − x (linear). Returns scores · decay: Tensor[N], same order.
    """
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"Matrix NMS kernel must be 'gaussian' or 'linear', got {kernel!r}")
    count = scores.shape[0]
    if masks.shape[0] != count or labels.shape[0] != count:
        raise ValueError(f"matrix_nms: {masks.shape[0]} masks, {labels.shape[0]} labels, {count} scores")
    if count > 1 and bool((scores[1:] > scores[:-1]).any()):
        raise ValueError("matrix_nms: scores must be sorted in descending order")
    if count == 0:
        return scores.clone()
    # masks of different labels never decay each other, so each label's masks are one block: the cost falls by the
    # number of labels present, and the result is that of the full matrix (intersections are exact integer counts)
    decay = torch.ones_like(scores)
    area = masks.flatten(1).sum(dim=1) if mask_area is None else mask_area
    for label in torch.unique(labels).tolist():
        block = (labels == label).nonzero().squeeze(1)  # still in descending score
        decay[block] = _block_decay(masks[block], area[block], kernel=kernel, sigma=sigma)
    return scores * decay


def _block_decay(masks: Tensor, mask_area: Tensor, *, kernel: str, sigma: float) -> Tensor:
    """Tensor[N] decay factors of same-label masks sorted by descending score (matrix_nms's formula)."""
    overlap = mask_iou_matrix(masks, mask_area).triu(diagonal=1)  # [i, j]: i above j
    compensate = overlap.amax(dim=0)  # [N]: for each mask, its largest overlap with a higher-scored one
    if kernel == "gaussian":
        decay = torch.exp(-sigma * overlap.square()) / torch.exp(-sigma * compensate.square())[:, None]
    else:
        decay = (1 - overlap) / (1 - compensate).clamp(min=_TINY)[:, None]
    return decay.amin(dim=0).clamp(max=1.0)
