"""SOLOv2 inference (SPEC §3.5): category grids and dynamic kernels → scored, de-duplicated instance masks."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torch.nn import functional as F

from lpsctl.config import SoloConfig
from lpsctl.postprocess.matrix_nms import matrix_nms
from lpsctl.structures import Instances

# nominal strides of the five grid levels (P4 resized to stride 8, P8, P16, P32, P64 resized to stride 32; see
# SOLOv2Head.level_inputs), used as the minimum stride-4 mask area of each level, as the SOLOv2 code does
LEVEL_STRIDES = (8, 8, 16, 32, 32)
MASK_STRIDE = 4  # mask features are at stride 4 of the network input
_UPSAMPLE_CHUNK = 16  # masks resized at once to full resolution (bounds memory only)
_CANDIDATE_CHUNK = 64  # candidate masks measured at once (bounds memory only)


class SoloOutputsLike(Protocol):
    """The fields of lpsctl.models.solov2.SoloOutputs that decoding reads (postprocess does not import models)."""

    category_per_level: list[Tensor]
    kernel_per_level: list[Tensor]
    mask_features: Tensor


def point_nms(probabilities: Tensor) -> Tensor:
    """Keep a cell only where it is ≥ its top, left and top-left neighbours (2×2 max-pool, as SOLOv2), else 0.

    probabilities: Tensor[C, S, S] → Tensor[C, S, S].
    """
    pooled = F.max_pool2d(probabilities[None], kernel_size=2, stride=1, padding=1)[0, :, :-1, :-1]
    return probabilities * (pooled == probabilities)


@torch.no_grad()
def decode_solov2(
    outputs: SoloOutputsLike,
    image_sizes: list[tuple[int, int]],
    original_sizes: list[tuple[int, int]],
    cfg: SoloConfig,
) -> list[Instances]:
    """Instances of each image of the batch, sorted by descending score.

    image_sizes: (height, width) of each network input before padding; original_sizes: (height, width) to return
    masks at. Instances.masks: Tensor[N, H0, W0] bool; mask_logits: Tensor[N, ceil(h/4), ceil(w/4)] float32 (stride-4
    logits cropped to the unpadded input); scores Tensor[N] in [0, 1]; classes Tensor[N] int64.
    """
    batch = outputs.mask_features.shape[0]
    if len(image_sizes) != batch or len(original_sizes) != batch:
        raise ValueError(
            f"{batch} images in the outputs but {len(image_sizes)} image sizes, {len(original_sizes)} originals"
        )
    if len(outputs.category_per_level) != len(LEVEL_STRIDES):
        raise ValueError(f"SOLOv2 outputs need {len(LEVEL_STRIDES)} levels, got {len(outputs.category_per_level)}")
    return [_decode_image(outputs, image, image_sizes[image], original_sizes[image], cfg) for image in range(batch)]


def _decode_image(
    outputs: SoloOutputsLike, image: int, image_size: tuple[int, int], original_size: tuple[int, int], cfg: SoloConfig
) -> Instances:
    features = outputs.mask_features[image].float()
    padded_height, padded_width = features.shape[-2] * MASK_STRIDE, features.shape[-1] * MASK_STRIDE
    if image_size[0] > padded_height or image_size[1] > padded_width:
        raise ValueError(f"image size {image_size} exceeds the padded input {(padded_height, padded_width)}")
    # padding is never an object: crop it at stride 4 before measuring areas and maskness
    features = features[:, : -(-image_size[0] // MASK_STRIDE), : -(-image_size[1] // MASK_STRIDE)]

    scores, kernels, strides = [], [], []
    for level, (category, kernel) in enumerate(zip(outputs.category_per_level, outputs.kernel_per_level, strict=True)):
        scores.append(point_nms(category[image].float().sigmoid()).flatten(1).T)  # [S², C]
        kernels.append(kernel[image].float().flatten(1).T)  # [S², D]
        strides.append(torch.full((kernels[-1].shape[0],), LEVEL_STRIDES[level], device=features.device))
    cell_scores = torch.cat(scores)
    cells, classes = (cell_scores > cfg.score_threshold).nonzero(as_tuple=True)
    candidate_kernels = torch.cat(kernels)[cells]

    # area and maskness of every candidate, a chunk at a time (memory stays bounded however many cells pass)
    area, maskness = torch.zeros(len(cells), device=features.device), torch.zeros(len(cells), device=features.device)
    for start in range(0, len(cells), _CANDIDATE_CHUNK):
        chunk = slice(start, start + _CANDIDATE_CHUNK)
        probabilities = torch.einsum("nd,dhw->nhw", candidate_kernels[chunk], features).sigmoid()
        binary = probabilities > cfg.mask_threshold
        area[chunk] = binary.sum(dim=(1, 2)).float()
        maskness[chunk] = (probabilities * binary).sum(dim=(1, 2)) / area[chunk].clamp(min=1)
    candidate_scores = cell_scores[cells, classes] * maskness
    keep_index = (area > torch.cat(strides)[cells]).nonzero().squeeze(1)
    order = keep_index[torch.argsort(candidate_scores[keep_index], descending=True)][: cfg.nms_pre]

    logits = torch.einsum("nd,dhw->nhw", candidate_kernels[order], features)  # the nms_pre best, again
    probabilities = logits.sigmoid()
    decayed = matrix_nms(
        probabilities > cfg.mask_threshold,
        classes[order],
        candidate_scores[order],
        kernel=cfg.nms_kernel,
        sigma=cfg.nms_sigma,
        mask_area=area[order],
    )
    survivors = (decayed >= cfg.update_threshold).nonzero().squeeze(1)
    ranked = survivors[torch.argsort(decayed[survivors], descending=True)][: cfg.max_per_image]
    return Instances(
        masks=_full_resolution_masks(probabilities[ranked], image_size, original_size, cfg.mask_threshold),
        scores=decayed[ranked],
        classes=classes[order][ranked].long(),
        mask_logits=logits[ranked],
    )


def _full_resolution_masks(
    probabilities: Tensor, image_size: tuple[int, int], original_size: tuple[int, int], threshold: float
) -> Tensor:
    """Tensor[N, h4, w4] stride-4 probabilities → Tensor[N, H0, W0] bool: ×4 bilinear, crop to the unpadded input,
    bilinear resize to the original size, binarise (the SOLOv2 code's order)."""
    height, width = image_size
    chunks = [torch.zeros(0, *original_size, dtype=torch.bool, device=probabilities.device)]
    for start in range(0, probabilities.shape[0], _UPSAMPLE_CHUNK):
        chunk = probabilities[None, start : start + _UPSAMPLE_CHUNK]
        chunk = F.interpolate(chunk, scale_factor=MASK_STRIDE, mode="bilinear", align_corners=False)
        chunk = chunk[:, :, :height, :width]
        if (height, width) != tuple(original_size):
            chunk = F.interpolate(chunk, size=original_size, mode="bilinear", align_corners=False)
        chunks.append(chunk[0] > threshold)
    return torch.cat(chunks)
