"""EfficientPS panoptic fusion adapted to SOLOv2 mask logits (SPEC §3.6): semantic logits + instances → panoptic ids.

Every threshold is an explicit keyword argument (the `FusionConfig` fields by name); the label tables default to
Cityscapes'. Inputs that break the contract raise ValueError (the callers check user files before fusion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lpsctl.labels import (
    IGNORE,
    INSTANCE_OFFSET,
    STUFF_TRAIN_IDS,
    THING_TRAIN_IDS,
    TRAIN_TO_LABEL_ID,
    label_id_to_train_id_lut,
)
from lpsctl.structures import Instances, PanopticPrediction

#: (x0, y0, x1, y1) pixel box, end-exclusive
Box = tuple[int, int, int, int]


def panoptic_fusion(
    semantic_logits: Tensor,
    instances: Instances,
    *,
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area: int = 2048,
    reference_area: int = 1024 * 2048,
    logit_scale: float = 4.0,
    stuff_train_ids: Sequence[int] = STUFF_TRAIN_IDS,
    thing_train_ids: Sequence[int] = THING_TRAIN_IDS,
    train_to_label_id: Sequence[int] = TRAIN_TO_LABEL_ID,
) -> PanopticPrediction:
    """Fuse one image's semantic logits and instance predictions into a Cityscapes panoptic result.

    semantic_logits: Tensor[C, H, W] float (C = 19 train ids). instances: masks Tensor[N, H, W] bool at the same size,
    scores Tensor[N], classes Tensor[N] thing index (train id `thing_train_ids[c]`), mask_logits Tensor[N, h, w] (any
    resolution, resized bilinearly to H×W) or None for binary masks (±logit_scale inside/outside).

    Steps (SPEC §3.6, as in the official EfficientPS `simple_test_mask_`):
    1-2. keep score ≥ score_threshold; walking in descending score, drop an instance when more than overlap_threshold
         of its mask is already taken by survivors (survival only; empty masks are dropped).
    3-4. FL = (σ(ML_A) + σ(ML_B)) ⊙ (ML_A + ML_B), ML_A = logit_scale × mask logits, ML_B = the semantic logit of the
         instance's class inside its box and 0 outside: the detection box when the instances have boxes (Mask R-CNN),
         else the mask's bounding box (SOLOv2, exported masks).
    5.   argmax over [stuff logits; FL_1..FL_n] (ties go to the earlier channel); a pixel won by FL_j belongs to j.
    6.   every other pixel takes the class of the full C-class semantic argmax: a stuff class keeps it; a thing class
         (a "thing pixel no instance won": the semantic head says thing, yet a stuff channel beat every FL) is void;
         a stuff class whose area is below stuff_area · H·W / reference_area becomes void.
    7.   ids: stuff = label id; thing = label id · 1000 + k, k counting from 0 per class in descending score over the
         instances that won ≥ 1 pixel (as cityscapesscripts' json2instanceImg numbers GT instances); instances that
         won no pixel are dropped.

    Returns ids int32[H, W] (0 = void) and segments_info sorted by id (id, category_id = label id, area, bbox
    [x, y, w, h], iscrowd 0). Runs on the logits' device; only the result is moved to the CPU.
    """
    _check_inputs(semantic_logits, instances, stuff_train_ids, thing_train_ids)
    if not logit_scale > 0:  # FL's outside bounds take the largest ML_A from the largest mask logit
        raise ValueError(f"logit_scale must be positive, got {logit_scale}")
    height, width = semantic_logits.shape[1:]
    device = semantic_logits.device
    logits = semantic_logits.float()
    stuff_ids = torch.as_tensor(list(stuff_train_ids), device=device)
    thing_ids = torch.as_tensor(list(thing_train_ids), device=device)
    # code per pixel: 0 void, 1..S a stuff class, S + 1 + j survivor j; kept as float32 (exact for these small
    # integers) while it is built, where comparisons and maxima are several times faster than bool and int64 ones
    stuff_value, code = _first_argmax(_channels(logits, stuff_train_ids, stuff_ids))
    survivors, boxes = _select_instances(instances, score_threshold, overlap_threshold)
    num_stuff, num_survivors = len(stuff_train_ids), len(survivors)
    count = 1 + num_stuff + num_survivors
    # a thing class as the semantic argmax (stuff listed first, so stuff wins ties) is void unless an instance wins
    thing_value = _channels(logits, thing_train_ids, thing_ids).amax(0)
    code.mul_(torch.le(thing_value, stuff_value, out=thing_value))  # 1.0 / 0.0
    _fused_argmax(stuff_value, logits, instances, survivors, boxes, thing_train_ids, logit_scale, code, 1 + num_stuff)
    statistics = _code_statistics(code, count)
    areas = statistics[:, 0]

    label_ids = torch.as_tensor(list(train_to_label_id), device=device)
    segment_ids = torch.zeros(count, dtype=torch.long, device=device)
    category_ids = torch.zeros(count, dtype=torch.long, device=device)
    minimum_area = stuff_area * height * width / reference_area
    stuff = slice(1, 1 + num_stuff)
    segment_ids[stuff] = torch.where(areas[stuff] >= minimum_area, label_ids[stuff_ids], 0)
    category_ids[stuff] = label_ids[stuff_ids]
    if num_survivors:
        things = slice(1 + num_stuff, count)
        classes = instances.classes.to(device)[torch.as_tensor(survivors, device=device)]
        thing_label = label_ids[thing_ids[classes]]
        present = areas[things] > 0
        # k = number of present instances of the same class before this one (descending score)
        earlier = torch.ones(num_survivors, num_survivors, dtype=torch.bool, device=device).tril(-1)
        rank = ((thing_label[:, None] == thing_label[None, :]) & earlier & present[None, :]).sum(1)
        segment_ids[things] = torch.where(present, thing_label * INSTANCE_OFFSET + rank, 0)
        category_ids[things] = thing_label
    ids = segment_ids.to(torch.int32).index_select(0, code.flatten().long()).view(height, width)
    return PanopticPrediction(
        ids=ids.cpu().numpy(), segments_info=_segments_info(statistics, segment_ids, category_ids)
    )


def _first_argmax(values: Tensor) -> tuple[Tensor, Tensor]:
    """The maximum over dim 0 of Tensor[K, H, W] and 1 + the first index reaching it, as float32 Tensor[H, W]s:
    `values.max(0)` (index + 1), one running maximum per channel — several times faster on a CPU than max(0)'s
    index reduction. A channel's index only replaces the smaller earlier ones where it is strictly larger."""
    best = values[0].clone()
    code = torch.ones_like(best)
    larger = torch.empty_like(best)
    for index in range(1, values.shape[0]):
        torch.gt(values[index], best, out=larger)  # 1.0 / 0.0
        torch.maximum(best, values[index], out=best)
        torch.maximum(code, larger.mul_(index + 1), out=code)
    return best, code


def _channels(logits: Tensor, train_ids: Sequence[int], as_tensor: Tensor) -> Tensor:
    """logits[train_ids]: a view when the ids are consecutive (Cityscapes' stuff 0-10 and things 11-18), else a copy."""
    first = train_ids[0] if len(train_ids) else 0
    if list(train_ids) == list(range(first, first + len(train_ids))):
        return logits.narrow(0, first, len(train_ids))
    return logits.index_select(0, as_tensor)


def semantic_from_panoptic(
    prediction: PanopticPrediction, label_to_train_id: np.ndarray | Sequence[int] | None = None
) -> np.ndarray:
    """uint8[H, W] train ids of a panoptic result (255 on void), e.g. for mIoU of the fused output.

    label_to_train_id: uint8[256] lookup (default: `lpsctl.labels.label_id_to_train_id_lut()`).
    """
    if label_to_train_id is None:
        label_to_train_id = label_id_to_train_id_lut()
    lut = np.asarray(label_to_train_id, dtype=np.uint8)
    if not prediction.segments_info:
        return np.full(prediction.ids.shape, IGNORE, dtype=np.uint8)
    segment_ids = np.array([s["id"] for s in prediction.segments_info], dtype=np.int64)
    train_ids = np.array([lut[s["category_id"]] for s in prediction.segments_info], dtype=np.uint8)
    order = np.argsort(segment_ids)
    segment_ids, train_ids = segment_ids[order], train_ids[order]
    position = np.clip(np.searchsorted(segment_ids, prediction.ids), 0, segment_ids.size - 1)
    return np.where(segment_ids[position] == prediction.ids, train_ids[position], IGNORE).astype(np.uint8)


def _check_inputs(
    logits: Tensor, instances: Instances, stuff_train_ids: Sequence[int], thing_train_ids: Sequence[int]
) -> None:
    if logits.dim() != 3:
        raise ValueError(f"semantic logits must be [C, H, W], got shape {tuple(logits.shape)}")
    if len(stuff_train_ids) + len(thing_train_ids) != logits.shape[0]:
        raise ValueError(
            f"semantic logits have {logits.shape[0]} channels but the stuff and thing tables list "
            f"{len(stuff_train_ids)} + {len(thing_train_ids)} classes"
        )
    if len(instances) == 0:
        return
    if tuple(instances.masks.shape[1:]) != tuple(logits.shape[1:]):
        raise ValueError(
            f"instance masks are {tuple(instances.masks.shape[1:])} but the semantic logits are "
            f"{tuple(logits.shape[1:])}: resize the masks to the image size before fusion"
        )
    if instances.mask_logits is not None and len(instances.mask_logits) != len(instances):
        raise ValueError(f"{len(instances.mask_logits)} mask logits for {len(instances)} instances")
    if instances.boxes is not None and tuple(instances.boxes.shape) != (len(instances), 4):
        raise ValueError(f"boxes of shape {tuple(instances.boxes.shape)} for {len(instances)} instances")
    classes = instances.classes
    if int(classes.min()) < 0 or int(classes.max()) >= len(thing_train_ids):
        raise ValueError(f"instance classes must be thing indices 0-{len(thing_train_ids) - 1}, got {classes.tolist()}")


def _select_instances(
    instances: Instances, score_threshold: float, overlap_threshold: float
) -> tuple[list[int], list[Box]]:
    """Surviving instance indices in descending score and their mask boxes (steps 1-2), testing only inside boxes."""
    if len(instances) == 0:
        return [], []
    masks, scores = instances.masks, instances.scores
    passing = torch.nonzero(scores >= score_threshold).flatten()
    candidates: list[int] = passing[torch.argsort(scores[passing], descending=True, stable=True)].tolist()
    taken = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
    survivors, boxes = [], []
    for index, box in zip(candidates, _mask_boxes(masks, candidates), strict=True):
        if box is None:  # empty mask: nothing to take, no box for ML_B
            continue
        x0, y0, x1, y1 = box
        mask = masks[index, y0:y1, x0:x1].bool()
        region = taken[y0:y1, x0:x1]
        if int((mask & region).sum()) > overlap_threshold * int(mask.sum()):
            continue
        region |= mask
        survivors.append(index)
        boxes.append(box if instances.boxes is None else _enclosing(box, instances.boxes[index], masks.shape[1:]))
    return survivors, boxes


def _enclosing(mask_box: Box, detection: Tensor, size: torch.Size) -> Box:
    """The pixels a float detection box (x0, y0, x1, y1) touches, clipped to the image, grown to hold the mask box
    (a pasted mask lies inside its box; the union only guards against rounding)."""
    height, width = size
    x0, y0, x1, y1 = detection.tolist()
    return (
        min(mask_box[0], max(0, math.floor(x0))),
        min(mask_box[1], max(0, math.floor(y0))),
        max(mask_box[2], min(width, math.ceil(x1))),
        max(mask_box[3], min(height, math.ceil(y1))),
    )


def _mask_boxes(masks: Tensor, indices: list[int]) -> list[Box | None]:
    """Boxes of masks Tensor[N, H, W] at `indices` (None for an empty mask), reading only those masks."""
    if not indices:
        return []
    if (
        masks.dtype == torch.bool
        and masks.is_contiguous()
        and masks.shape[2] % 8 == 0
        and masks.storage_offset() % 8 == 0
    ):
        # eight mask pixels per int64 word (0/1 bytes: never negative): the row test reads 8× fewer elements
        words = masks.view(torch.uint8).view(torch.int64)
        rows = torch.stack([words[index].amax(1) for index in indices]) > 0
    else:
        rows = torch.stack([masks[index].ne(0).any(1) for index in indices])
    positions = torch.arange(rows.shape[1], device=rows.device)
    tops = torch.where(rows, positions, rows.shape[1]).amin(1).tolist()
    bottoms = (torch.where(rows, positions, -1).amax(1) + 1).tolist()
    boxes: list[Box | None] = []
    for index, y0, y1 in zip(indices, tops, bottoms, strict=True):
        if y1 <= y0:
            boxes.append(None)
            continue
        band = masks[index, y0:y1]
        columns = torch.nonzero(band.view(torch.uint8).amax(0) if band.dtype == torch.bool else band.ne(0).any(0))
        columns = columns.flatten()
        boxes.append((int(columns[0]), y0, int(columns[-1]) + 1, y1))
    return boxes


def _margin(box: Box) -> int:
    """A quarter of the box's larger side, at least 16 px."""
    x0, y0, x1, y1 = box
    return max(16, (max(x1 - x0, y1 - y0) + 3) // 4)


def _grow(box: Box, margin: int, height: int, width: int) -> Box:
    """The box grown by `margin` on every side, clipped to the image."""
    x0, y0, x1, y1 = box
    return max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)


def _source_index(output_size: int, input_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear resize weights along one axis, as `F.interpolate(mode="bilinear", align_corners=False)` computes
    them: Tensor[output_size] lower index, upper index, weight of the upper one."""
    scale = input_size / output_size
    source = ((torch.arange(output_size, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    lower = source.long().clamp(max=input_size - 1)
    upper = (lower + 1).clamp(max=input_size - 1)
    return lower, upper, source - lower


def _bilinear(low: Tensor, rows: tuple[Tensor, ...], columns: tuple[Tensor, ...], grid: bool) -> Tensor:
    """Resize Tensor[h, w] at the given output rows × columns (grid) or (row, column) pairs (points)."""
    r0, r1, rw = rows
    c0, c1, cw = columns
    if grid:
        top, bottom, rw = low[r0], low[r1], rw[:, None]
        top = top[:, c0] * (1 - cw) + top[:, c1] * cw
        bottom = bottom[:, c0] * (1 - cw) + bottom[:, c1] * cw
    else:
        top = low[r0, c0] * (1 - cw) + low[r0, c1] * cw
        bottom = low[r1, c0] * (1 - cw) + low[r1, c1] * cw
    return top * (1 - rw) + bottom * rw


#: per instance, the running maxima of its low-resolution map's row maxima from the top and from the bottom, and of
#: its column maxima from the left and from the right (Python lists, for lookups)
_LineMaxima = tuple[list[float], list[float], list[float], list[float]]


def _line_maxima(lows: list[Tensor]) -> list[_LineMaxima]:
    """`_LineMaxima` of each Tensor[h, w] (all of one size): its row and column maxima, then the running maxima of
    all maps at once."""
    rows = torch.stack([low.amax(1) for low in lows])
    columns = torch.stack([low.amax(0) for low in lows])

    def running(lines: Tensor) -> tuple[list, list]:
        forward = lines.cummax(1).values
        backward = lines.flip(1).cummax(1).values.flip(1)
        return forward.tolist(), backward.tolist()

    (top, bottom), (left, right) = running(rows), running(columns)
    return list(zip(top, bottom, left, right, strict=True))


def _outside_maximum(lines: _LineMaxima, reach: tuple[list[int], ...], region: Box) -> float:
    """An upper bound of the resized map outside `region`: the largest low-resolution value that any outside pixel
    interpolates from (a bilinear value never exceeds the values it mixes); −inf when the region is everything.
    reach: the lower and upper source index of every output row, then of every column (`_source_index`). The indices
    are monotone, so the rows above the region read low rows 0..upper[y0 − 1] and those below it rows lower[y1]..
    h − 1 (all of them when upsampling), and likewise the columns."""
    top, bottom, left, right = lines
    row_lower, row_upper, column_lower, column_upper = reach
    x0, y0, x1, y1 = region
    maxima = [top[row_upper[y0 - 1]]] if y0 > 0 else []
    maxima += [bottom[row_lower[y1]]] if y1 < len(row_lower) else []
    maxima += [left[column_upper[x0 - 1]]] if x0 > 0 else []
    maxima += [right[column_lower[x1]]] if x1 < len(column_lower) else []
    return max(maxima, default=-math.inf)


def _ring_minimum(values: Tensor, box: Box, outer: Box) -> float:
    """The smallest of Tensor[H, W] `values` in `outer` outside `box` (+inf where there is no such pixel)."""
    (x0, y0, x1, y1), (ox0, oy0, ox1, oy1) = box, outer
    parts = (values[oy0:y0, ox0:ox1], values[y1:oy1, ox0:ox1], values[y0:y1, ox0:x0], values[y0:y1, x1:ox1])
    return min((float(part.amin()) for part in parts if part.numel()), default=math.inf)


def _crop_resize(low: Tensor, factor: tuple[int, int], region: Box, scale: float) -> Tensor:
    """`scale × F.interpolate(low, ×factor, bilinear)` on `region` only: the low-resolution crop that region reads
    (one pixel of context on each side, as the interpolation needs) resized by the same factor, then trimmed. With a
    whole factor the source coordinates of the crop differ from the whole map's by whole pixels, so the weights are
    those of the whole map's resize up to float rounding of the coordinates (bit for bit for factors 2, 4, 8; about
    1e-4 for 3, 5, 6), and at the map's edges both clamp alike."""
    x0, y0, x1, y1 = region
    (fy, fx), (h, w) = factor, low.shape
    top, left = max(0, y0 // fy - 1), max(0, x0 // fx - 1)
    bottom, right = min(h, (y1 - 1) // fy + 2), min(w, (x1 - 1) // fx + 2)
    crop = low[top:bottom, left:right]
    # size = factor × crop: the scale F.interpolate derives, crop/size, is exactly the whole map's 1/factor
    resized = F.interpolate(crop[None, None], size=(crop.shape[0] * fy, crop.shape[1] * fx), mode="bilinear")[0, 0]
    resized.mul_(scale)  # after the resize: logits near float32's range neither overflow nor lose subnormals first
    # at a crop edge that is not the map's edge, the clamp differs: the trimmed region never reads those rows
    return resized[y0 - top * fy : y1 - top * fy, x0 - left * fx : x1 - left * fx]


@dataclass
class _BinaryMaskSource:
    """ML_A of one instance from its binary mask: ±logit_scale, the mask's crop of its box inside, −logit_scale
    everywhere outside the box. `region` = `outer` = the box; `bound` is FL's value outside it."""

    mask: Tensor
    region: Box
    outer: Box
    bound: float

    def on_region(self, logit_scale: float) -> Tensor:
        return torch.where(self.mask, logit_scale, -logit_scale)

    def at(self, ys: Tensor, xs: Tensor, logit_scale: float) -> Tensor:
        return torch.full(ys.shape, -logit_scale, device=ys.device)


@dataclass
class _MaskLogitSource:
    """ML_A of one instance as logit_scale × its low-resolution mask logits `low` resized bilinearly, resampled by
    (`rows`, `columns`) (`_source_index` weights). `region` is where FL is evaluated exactly; between it and `outer`
    FL is below the stuff logit; `bound` is an upper bound of FL outside `outer`."""

    low: Tensor
    rows: tuple[Tensor, Tensor, Tensor]
    columns: tuple[Tensor, Tensor, Tensor]
    region: Box
    outer: Box
    bound: float

    #: (rows, columns) output pixels per low-resolution pixel when the resize is by a whole factor (then the region
    #: is resized by F.interpolate from a crop of `low`, with the same weights as the whole map's resize), else None
    factor: tuple[int, int] | None = None

    def on_region(self, logit_scale: float) -> Tensor:
        x0, y0, x1, y1 = self.region
        if self.factor is not None:
            return _crop_resize(self.low, self.factor, self.region, logit_scale)  # a fresh tensor's view
        rows, columns = tuple(t[y0:y1] for t in self.rows), tuple(t[x0:x1] for t in self.columns)
        return logit_scale * _bilinear(self.low, rows, columns, grid=True)

    def at(self, ys: Tensor, xs: Tensor, logit_scale: float) -> Tensor:
        rows, columns = tuple(t[ys] for t in self.rows), tuple(t[xs] for t in self.columns)
        return logit_scale * _bilinear(self.low, rows, columns, grid=False)


def _mask_logit_sources(
    instances: Instances, survivors: list[int], boxes: list[Box], stuff_value: Tensor, logit_scale: float
) -> list[_MaskLogitSource | _BinaryMaskSource]:
    """One source of ML_A per survivor: from its mask logits when the instances have them, else from its mask.

    With mask logits, `outer` is the box plus a margin (where mask logits still rise towards the object), and `region`
    the box plus the smallest margin 0, 1, 2, 4, … inside it beyond which (σ(A) + ½)·A stays below every stuff logit
    between it and `outer` (else `outer` itself): the exact FL is evaluated where the instance can win."""
    (height, width), device = stuff_value.shape, stuff_value.device
    sources: list[_MaskLogitSource | _BinaryMaskSource] = []
    if instances.mask_logits is None:
        for index, (x0, y0, x1, y1) in zip(survivors, boxes, strict=True):
            mask = instances.masks[index, y0:y1, x0:x1].to(device).bool()
            sources.append(_BinaryMaskSource(mask, (x0, y0, x1, y1), (x0, y0, x1, y1), _rising_bound(-logit_scale)))
        return sources
    if not survivors:
        return []
    lows = [instances.mask_logits[index].to(device).float() for index in survivors]
    low_height, low_width = lows[0].shape
    rows, columns = _source_index(height, low_height, device), _source_index(width, low_width, device)
    reach = (rows[0].tolist(), rows[1].tolist(), columns[0].tolist(), columns[1].tolist())
    whole = height % low_height == 0 and width % low_width == 0
    factor = (height // low_height, width // low_width) if whole else None
    for low, box, lines in zip(lows, boxes, _line_maxima(lows), strict=True):
        outer_margin = _margin(box)
        outer = _grow(box, outer_margin, height, width)
        bound = _rising_bound(logit_scale * _outside_maximum(lines, reach, outer))
        ring_minimum, region, margin = _ring_minimum(stuff_value, box, outer), outer, 0
        while margin < outer_margin:
            candidate = _grow(box, margin, height, width)
            if _rising_bound(logit_scale * _outside_maximum(lines, reach, candidate)) < ring_minimum:
                region = candidate
                break
            margin = 2 * margin or 1
        sources.append(_MaskLogitSource(low, rows, columns, region, outer, bound, factor))
    return sources


def _fused_argmax(
    stuff_value: Tensor,
    logits: Tensor,
    instances: Instances,
    survivors: list[int],
    boxes: list[Box],
    thing_train_ids: Sequence[int],
    logit_scale: float,
    code: Tensor,
    first: int,
) -> None:
    """Writes `first` + j into `code` (Tensor[H, W] float32) where survivor j's FL is the largest and beats the best
    stuff logit, leaving the other pixels as they are (steps 3-5). An exact argmax (ties to the earlier channel)
    computed region by region (`_MaskLogitSource`): outside its box an instance's FL = (σ(A) + ½)·A rises with A, so
    between its region and `outer` it loses to the stuff logit, and beyond `outer` it can only win pixels whose stuff
    logit is below the bound from its largest logit there; those few pixels are evaluated one by one. Exact up to
    float32 rounding: CPU kernels (sigmoid; a resize by a factor other than 2, 4, 8) can give an ulp more or less
    for the same value at another position in another region's shape, which decides exact ties. `stuff_value`
    (Tensor[H, W], the best stuff logit) is overwritten with the winning logit."""
    if not survivors:
        return
    best = stuff_value  # the best logit so far, updated in place
    classes = instances.classes.tolist()
    sources = _mask_logit_sources(instances, survivors, boxes, stuff_value, logit_scale)
    # the only pixels any instance could win outside its `outer` box, found once
    low_ys, low_xs = torch.nonzero(stuff_value < max(source.bound for source in sources), as_tuple=True)
    for number, (index, box, source) in enumerate(zip(survivors, boxes, sources, strict=True)):
        (x0, y0, x1, y1), (rx0, ry0, rx1, ry1) = box, source.region
        ml_a = source.on_region(logit_scale)
        # FL = (σ(A) + σ(B))·(A + B): the class's semantic logit B inside the box, B = 0 (σ = ½) around it
        sigmoid_a = ml_a.sigmoid()
        inner = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
        ml_b = logits[thing_train_ids[classes[index]], y0:y1, x0:x1]
        fused_inner = (sigmoid_a[inner] + ml_b.sigmoid()).mul_(ml_a[inner] + ml_b)
        fused = sigmoid_a.add_(0.5).mul_(ml_a)
        fused[inner] = fused_inner
        best_region, code_region = best[ry0:ry1, rx0:rx1], code[ry0:ry1, rx0:rx1]
        # 1.0 where FL beats every earlier channel; this survivor's code is larger than every code written before,
        # so a maximum writes it exactly there (ties keep the earlier channel)
        better = torch.gt(fused, best_region, out=ml_a).mul_(first + number)  # ML_A is used up
        torch.maximum(best_region, fused, out=best_region)
        torch.maximum(code_region, better, out=code_region)

        if low_ys.numel() == 0:
            continue
        ox0, oy0, ox1, oy1 = source.outer
        inside = (low_ys >= oy0) & (low_ys < oy1) & (low_xs >= ox0) & (low_xs < ox1)
        pick = ~inside & (best[low_ys, low_xs] < source.bound)
        ys, xs = low_ys[pick], low_xs[pick]
        if ys.numel() == 0:
            continue
        ml_a = source.at(ys, xs, logit_scale)
        fused = (ml_a.sigmoid() + 0.5) * ml_a  # ML_B is 0 outside the box
        better = fused > best[ys, xs]
        best[ys[better], xs[better]] = fused[better]
        code[ys[better], xs[better]] = first + number


def _rising_bound(largest_logit: float) -> float:
    """(σ(a) + ½)·a at the largest ML_A a, plus slack for float32 rounding of FL and of the resize; −inf if none."""
    if not math.isfinite(largest_logit):
        return -math.inf
    exponential = math.exp(-abs(largest_logit))  # never overflows
    sigmoid = 1 / (1 + exponential) if largest_logit >= 0 else exponential / (1 + exponential)
    bound = (sigmoid + 0.5) * largest_logit
    return bound + 1e-4 * (1 + abs(bound))


def _code_statistics(code: Tensor, count: int) -> Tensor:
    """Tensor[count, 5] int64 per code 0..count-1 of Tensor[H, W] float32 codes: area, x0, y0, x1, y1 (inclusive;
    an absent code has area 0). Computed on the image's runs of equal codes along rows (a few per object and row),
    so every reduction handles runs rather than pixels."""
    height, width = code.shape
    device = code.device
    starts_here = torch.ones_like(code)  # 1.0 where a run starts: a row's first pixel or a change of code
    torch.ne(code[:, 1:], code[:, :-1], out=starts_here[:, 1:])
    starts = torch.nonzero(starts_here.flatten()).flatten()
    codes = code.flatten()[starts].long()
    lengths = torch.diff(starts, append=torch.tensor([height * width], device=device))
    rows, columns = starts // width, starts % width

    def reduce(values: Tensor, how: str, empty: int) -> Tensor:
        initial = torch.full((count,), empty, dtype=torch.long, device=device)
        return initial.scatter_reduce_(0, codes, values, how)

    areas = torch.zeros(count, dtype=torch.long, device=device).scatter_add_(0, codes, lengths)
    x0, x1 = reduce(columns, "amin", width), reduce(columns + lengths - 1, "amax", -1)
    y0, y1 = reduce(rows, "amin", height), reduce(rows, "amax", -1)
    return torch.stack([areas, x0, y0, x1, y1], 1)


def _segments_info(statistics: Tensor, segment_ids: Tensor, category_ids: Tensor) -> list[dict]:
    """segments_info sorted by id: area and bbox [x, y, w, h] of every code with a non-void id and pixels."""
    areas, x0, y0, x1, y1 = statistics.unbind(1)
    table = torch.stack([segment_ids, category_ids, areas, x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1).cpu().tolist()
    segments = [
        {"id": sid, "category_id": category, "area": area, "bbox": [x, y, w, h], "iscrowd": 0}
        for sid, category, area, x, y, w, h in table
        if sid != 0 and area > 0
    ]
    return sorted(segments, key=lambda segment: segment["id"])
