"""SOLOv2 inference (SPEC §3.5): category grids and dynamic kernels → scored, de-duplicated instance masks."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from lpsctl.postprocess.matrix_nms import matrix_nms
from lpsctl.structures import Instances, SoloGeometry, SoloOutputs, dynamic_mask_logits

_UPSAMPLE_CHUNK = 16  # masks resized at once to full resolution (bounds memory only)
_CANDIDATE_CHUNK = 64  # candidate masks measured at once (bounds memory only)


def point_nms(probabilities: Tensor) -> Tensor:
    """Keep a cell only where it is ≥ its top, left and top-left neighbours (2×2 max-pool, as SOLOv2), else 0.

    probabilities: Tensor[C, S, S] → Tensor[C, S, S].
    """
    # the 2×2 window ending at each cell, as max_pool2d(kernel 2, stride 1, padding 1) sees it (padding is −inf),
    # from three shifted maxima: on these small grids max_pool2d's per-call cost was ~6× this
    padded = F.pad(probabilities, (1, 0, 1, 0), value=-math.inf)
    pooled = torch.maximum(torch.maximum(padded[:, 1:, 1:], padded[:, :-1, 1:]), padded[:, :-1, :-1])
    pooled = torch.maximum(pooled, padded[:, 1:, :-1])
    return probabilities * (pooled == probabilities)


class SOLOv2PostProcessor:
    """SOLOv2 raw outputs → per-image Instances: point NMS, maskness-rescored candidates, Matrix NMS, top-k, masks at
    the original size. `geometry` is the head's (level strides, mask stride); thresholds are keyword arguments, as
    `build_postprocessor` passes them from `SoloConfig`."""

    def __init__(
        self,
        geometry: SoloGeometry,
        *,
        score_threshold: float = 0.1,
        mask_threshold: float = 0.5,
        nms_pre: int = 500,
        update_threshold: float = 0.05,
        max_per_image: int = 100,
        nms_kernel: Literal["gaussian", "linear"] = "gaussian",
        nms_sigma: float = 2.0,
    ) -> None:
        self.geometry = geometry
        self.score_threshold, self.mask_threshold = score_threshold, mask_threshold
        self.nms_pre, self.update_threshold, self.max_per_image = nms_pre, update_threshold, max_per_image
        self.nms_kernel, self.nms_sigma = nms_kernel, nms_sigma

    @torch.no_grad()
    def __call__(
        self, outputs: SoloOutputs, image_sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]]
    ) -> list[Instances]:
        """Instances of each image of the batch, sorted by descending score.

        image_sizes: (height, width) of each network input before padding; original_sizes: (height, width) to
        return masks at. Instances.masks: Tensor[N, H0, W0] bool; mask_logits: Tensor[N, ceil(h/4), ceil(w/4)]
        float32 (stride-4 logits cropped to the unpadded input); scores Tensor[N] in [0, 1]; classes Tensor[N] int64.
        """
        batch = outputs.mask_features.shape[0]
        if len(image_sizes) != batch or len(original_sizes) != batch:
            raise ValueError(
                f"{batch} images in the outputs but {len(image_sizes)} image sizes, {len(original_sizes)} originals"
            )
        levels = len(self.geometry.level_strides)
        if len(outputs.category_per_level) != levels:
            raise ValueError(f"SOLOv2 outputs need {levels} levels, got {len(outputs.category_per_level)}")
        outputs = outputs.float()
        return [self._decode_image(outputs, image, image_sizes[image], original_sizes[image]) for image in range(batch)]

    def _decode_image(
        self, outputs: SoloOutputs, image: int, image_size: tuple[int, int], original_size: tuple[int, int]
    ) -> Instances:
        features = self._cropped_features(outputs.mask_features[image], image_size)
        scores, kernels, strides = [], [], []
        for level, (category, kernel) in enumerate(
            zip(outputs.category_per_level, outputs.kernel_per_level, strict=True)
        ):
            scores.append(point_nms(category[image].sigmoid()).flatten(1).T)  # [S², C]
            kernels.append(kernel[image].flatten(1).T)  # [S², D]
            stride = self.geometry.level_strides[level]
            strides.append(torch.full((kernels[-1].shape[0],), stride, device=features.device))
        cell_scores = torch.cat(scores)
        cells, classes = (cell_scores > self.score_threshold).nonzero(as_tuple=True)
        # in descending category score, so that measuring can stop once no later candidate can reach the nms_pre best
        by_score = torch.argsort(cell_scores[cells, classes], descending=True, stable=True)
        cells, classes = cells[by_score], classes[by_score]
        category_scores = cell_scores[cells, classes]
        candidate_kernels = torch.cat(kernels)[cells]
        minimum_area = torch.cat(strides)[cells]
        area, maskness, measured = self._measure(candidate_kernels, features, category_scores, minimum_area)
        candidate_scores = category_scores * maskness
        keep_index = (area > minimum_area).nonzero().squeeze(1)
        order = keep_index[torch.argsort(candidate_scores[keep_index], descending=True)][: self.nms_pre]

        decayed = matrix_nms(
            measured.masks_of(order),
            classes[order],
            candidate_scores[order],
            kernel=self.nms_kernel,
            sigma=self.nms_sigma,
            mask_area=area[order],
        )
        survivors = (decayed >= self.update_threshold).nonzero().squeeze(1)
        ranked = survivors[torch.argsort(decayed[survivors], descending=True)][: self.max_per_image]
        logits = dynamic_mask_logits(candidate_kernels[order[ranked]], features)  # the few that are returned, again
        masks = _full_resolution_masks(
            logits.sigmoid(), image_size, original_size, self.mask_threshold, self.geometry.mask_stride
        )
        return Instances(masks=masks, scores=decayed[ranked], classes=classes[order][ranked].long(), mask_logits=logits)

    def _cropped_features(self, features: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Tensor[E, h, w] mask features without the padding (never an object: cropped before areas and maskness)."""
        stride = self.geometry.mask_stride
        padded_height, padded_width = features.shape[-2] * stride, features.shape[-1] * stride
        if image_size[0] > padded_height or image_size[1] > padded_width:
            raise ValueError(f"image size {image_size} exceeds the padded input {(padded_height, padded_width)}")
        return features[:, : -(-image_size[0] // stride), : -(-image_size[1] // stride)]

    def _measure(
        self, kernels: Tensor, features: Tensor, category_scores: Tensor, minimum_area: Tensor
    ) -> tuple[Tensor, Tensor, _MeasuredMasks]:
        """Binary area and maskness (mean probability inside the binary mask) of each candidate, Tensor[N] each, and
        the binary masks of the best measured ones, a chunk at a time (memory stays bounded however many cells pass),
        candidates in descending category score.

        Exact early stop: a candidate's final score (category score × maskness, maskness ≤ 1) never exceeds its
        category score, so once nms_pre measured candidates that keep their mask (area > `minimum_area`) score above
        every later category score, no later candidate can enter the nms_pre best: they are left unmeasured (area
        0, dropped like an empty mask). With `solo.score_threshold=0` this bounds the work by nms_pre, not by S²·C."""
        area = torch.zeros(len(kernels), device=features.device)
        maskness = torch.zeros(len(kernels), device=features.device)
        best = torch.zeros(0, device=features.device)  # the final scores of the nms_pre best kept so far
        measured = _MeasuredMasks(len(kernels), self.nms_pre, features)
        for start in range(0, len(kernels), _CANDIDATE_CHUNK):
            if len(best) >= self.nms_pre and float(best[-1]) > float(category_scores[start]):
                break
            chunk = slice(start, start + _CANDIDATE_CHUNK)
            # probabilities above the mask threshold, 0 elsewhere (in place: one tensor per chunk); > 0 is then
            # exactly probability > mask_threshold, because the threshold is ≥ 0. A NaN (an overflowed fp16 head)
            # is background, as `probability > threshold` made it, rather than an area of unknown value
            probabilities = dynamic_mask_logits(kernels[chunk], features).sigmoid_().nan_to_num_(nan=0.0)
            inside = F.threshold(probabilities, self.mask_threshold, 0.0, inplace=True)
            area[chunk] = torch.count_nonzero(inside, dim=(1, 2)).float()
            maskness[chunk] = inside.sum(dim=(1, 2)) / area[chunk].clamp(min=1)
            kept = area[chunk] > minimum_area[chunk]
            final = (category_scores[chunk] * maskness[chunk])[kept]
            best = torch.sort(torch.cat([best, final]), descending=True).values[: self.nms_pre]
            cutoff = float(best[-1]) if len(best) >= self.nms_pre else None
            measured.add(kept.nonzero().squeeze(1) + start, inside[kept] > 0, final, cutoff)
        return area, maskness, measured


class _MeasuredMasks:
    """The binary masks of measured candidates that may still be among the nms_pre best, so that Matrix NMS does not
    compute them again. Holds at most 2 · nms_pre + one chunk, plus any ties with the nms_pre-th best: past that, those
    scored below it are dropped (ties with it stay, so any order of equal scores finds its masks)."""

    def __init__(self, count: int, nms_pre: int, features: Tensor) -> None:
        self.nms_pre, self.size = nms_pre, 0
        self.row = torch.full((count,), -1, dtype=torch.long, device=features.device)  # candidate → row of masks
        empty = torch.zeros(0, *features.shape[-2:], dtype=torch.bool, device=features.device)
        self.parts: list[tuple[Tensor, Tensor, Tensor]] = [(self.row[:0], features.new_zeros(0), empty)]

    def add(self, candidates: Tensor, masks: Tensor, scores: Tensor, cutoff: float | None) -> None:
        """Adds a chunk's kept candidates; `cutoff`: the nms_pre-th best final score so far (None: fewer kept)."""
        self.parts.append((candidates, scores, masks))
        self.size += len(candidates)
        if cutoff is not None and self.size > 2 * self.nms_pre:
            candidates, scores, masks = self._joined()
            stay = (scores >= cutoff).nonzero().squeeze(1)
            self.parts, self.size = [(candidates[stay], scores[stay], masks[stay])], len(stay)

    def _joined(self) -> tuple[Tensor, Tensor, Tensor]:
        candidates, scores, masks = (torch.cat(part) for part in zip(*self.parts, strict=True))
        return candidates, scores, masks

    def masks_of(self, candidates: Tensor) -> Tensor:
        """Tensor[len(candidates), h, w] bool: the masks of candidates that are among the nms_pre best."""
        stored, _, masks = self._joined()
        self.row[stored] = torch.arange(len(stored), device=self.row.device)
        rows = self.row[candidates]
        if bool((rows < 0).any()):
            raise AssertionError("a candidate among the nms_pre best was not kept while measuring")
        return masks[rows]


def _full_resolution_masks(
    probabilities: Tensor, image_size: tuple[int, int], original_size: tuple[int, int], threshold: float, stride: int
) -> Tensor:
    """Tensor[N, h4, w4] stride-4 probabilities → Tensor[N, H0, W0] bool: ×4 bilinear, crop to the unpadded input,
    bilinear resize to the original size, binarise (the SOLOv2 code's order)."""
    height, width = image_size
    chunks = [torch.zeros(0, *original_size, dtype=torch.bool, device=probabilities.device)]
    for start in range(0, probabilities.shape[0], _UPSAMPLE_CHUNK):
        chunk = probabilities[None, start : start + _UPSAMPLE_CHUNK]
        chunk = F.interpolate(chunk, scale_factor=stride, mode="bilinear", align_corners=False)
        chunk = chunk[:, :, :height, :width]
        if (height, width) != tuple(original_size):
            chunk = F.interpolate(chunk, size=original_size, mode="bilinear", align_corners=False)
        chunks.append(chunk[0] > threshold)
    return torch.cat(chunks)
