"""panoptic_fusion (SPEC §3.6) on hand-made logits, and against a dense, literal implementation of the steps."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lpsctl.config import FusionConfig
from lpsctl.labels import STUFF_TRAIN_IDS, THING_TRAIN_IDS, TRAIN_TO_LABEL_ID
from lpsctl.postprocess.fusion import panoptic_fusion, semantic_from_panoptic
from lpsctl.structures import Instances, PanopticPrediction

ROAD, SKY, BUILDING = 0, 10, 2  # train ids
PERSON, CAR = 0, 2  # thing indices (train ids 11, 13; label ids 24, 26)
HEIGHT, WIDTH = 64, 128  # minimum stuff area at this size: 2048 · 8192 / 2097152 = 8 px


def _logits(fill: int = ROAD) -> torch.Tensor:
    logits = torch.full((19, HEIGHT, WIDTH), -5.0)
    logits[fill] = 5.0
    return logits


def _box_mask(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _instances(masks: list[torch.Tensor], scores: list[float], classes: list[int], logits: bool = True) -> Instances:
    stacked = torch.stack(masks) if masks else torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool)
    return Instances(
        masks=stacked,
        scores=torch.tensor(scores, dtype=torch.float32),
        classes=torch.tensor(classes, dtype=torch.long),
        mask_logits=torch.where(stacked, 3.0, -3.0) if logits else None,
    )


def _check_segments(prediction: PanopticPrediction) -> None:
    """segments_info agrees with the id map: every non-zero id listed once, areas and boxes exact."""
    ids = prediction.ids
    listed = [segment["id"] for segment in prediction.segments_info]
    assert sorted(listed) == listed and len(set(listed)) == len(listed)
    assert set(np.unique(ids).tolist()) - {0} == set(listed)
    for segment in prediction.segments_info:
        rows, columns = np.nonzero(ids == segment["id"])
        assert segment["area"] == rows.size
        assert segment["bbox"] == [
            columns.min(),
            rows.min(),
            columns.max() - columns.min() + 1,
            rows.max() - rows.min() + 1,
        ]
        expected_category = segment["id"] // 1000 if segment["id"] >= 1000 else segment["id"]
        assert segment["category_id"] == expected_category and segment["iscrowd"] == 0


def test_higher_score_wins_the_overlap_and_ids_count_from_zero() -> None:
    logits = _logits()
    first, second = _box_mask(10, 30, 10, 50), _box_mask(10, 30, 40, 80)  # overlap: 10 of 40 columns = 25 %
    logits[11 + CAR, 10:30, 10:80] = 5.0
    result = panoptic_fusion(logits, _instances([second, first], [0.7, 0.9], [CAR, CAR]))
    _check_segments(result)
    assert (result.ids[10:30, 10:50] == 26000).all()  # the 0.9 instance is numbered first and keeps the overlap
    assert (result.ids[10:30, 50:80] == 26001).all()
    assert (result.ids[40:, :] == 7).all()  # road


@pytest.mark.parametrize(("overlap_columns", "survives"), [(20, True), (21, False)])
def test_overlap_fraction_decides_survival(overlap_columns: int, survives: bool) -> None:
    logits = _logits()
    logits[11 + PERSON] = 4.0
    first, second = _box_mask(0, 10, 0, 40), _box_mask(0, 10, 40 - overlap_columns, 80 - overlap_columns)
    result = panoptic_fusion(logits, _instances([first, second], [0.9, 0.8], [PERSON, PERSON]))
    _check_segments(result)
    assert (24001 in result.ids) == survives  # 20 of 40 columns = 0.5 is not more than the threshold


def test_low_score_instance_is_dropped_and_thing_pixels_without_instance_are_void() -> None:
    logits = _logits()
    logits[11 + CAR, 20:40, 20:60] = 8.0  # the semantic head says car here
    result = panoptic_fusion(logits, _instances([_box_mask(20, 40, 20, 60)], [0.49], [CAR]))
    _check_segments(result)
    assert (result.ids[20:40, 20:60] == 0).all()
    assert [s["id"] for s in result.segments_info] == [7]
    kept = panoptic_fusion(logits, _instances([_box_mask(20, 40, 20, 60)], [0.49], [CAR]), score_threshold=0.4)
    assert (kept.ids[20:40, 20:60] == 26000).all()


@pytest.mark.parametrize("scale", [1, 2])
def test_small_stuff_segments_become_void(scale: int) -> None:
    height, width = HEIGHT * scale, WIDTH * scale  # minimum area 8 · scale² px
    logits = torch.full((19, height, width), -5.0)
    logits[ROAD] = 5.0
    minimum = 8 * scale * scale
    logits[SKY, 0, : minimum - 1] = 9.0  # one pixel short: void
    logits[BUILDING, 5, :minimum] = 9.0  # exactly the minimum: kept
    empty = Instances(torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    result = panoptic_fusion(logits, empty)
    _check_segments(result)
    assert (result.ids[0, : minimum - 1] == 0).all()
    assert (result.ids[5, :minimum] == 11).all()
    assert [s["id"] for s in result.segments_info] == [7, 11]


def test_binary_masks_fuse() -> None:
    logits = _logits()
    mask = _box_mask(5, 25, 5, 45)
    logits[11 + PERSON, 0:30, 0:50] = 2.0  # below road inside the box: ML_A = +4 still wins inside the mask
    result = panoptic_fusion(logits, _instances([mask], [0.8], [PERSON], logits=False))
    _check_segments(result)
    assert (result.ids[mask.numpy()] == 24000).all()
    assert (result.ids[~mask.numpy()] == 7).all()


def test_zero_instances_give_only_stuff() -> None:
    logits = _logits(ROAD)
    logits[SKY, :20] = 9.0
    result = panoptic_fusion(logits, _instances([], [], []), **asdict(FusionConfig()))
    _check_segments(result)
    assert set(np.unique(result.ids).tolist()) == {7, 23}
    assert result.ids.dtype == np.int32 and result.ids.shape == (HEIGHT, WIDTH)


def test_instances_without_pixels_are_dropped_and_numbering_stays_contiguous() -> None:
    logits = _logits()
    big, hidden, other = _box_mask(0, 20, 0, 20), _box_mask(0, 10, 0, 10), _box_mask(30, 40, 30, 40)
    masks = [big, hidden, torch.zeros(HEIGHT, WIDTH, dtype=torch.bool), other]
    result = panoptic_fusion(logits, _instances(masks, [0.9, 0.8, 0.7, 0.6], [CAR, CAR, CAR, CAR]))
    _check_segments(result)
    assert [s["id"] for s in result.segments_info] == [7, 26000, 26001]  # `hidden` lies inside `big`: dropped
    assert (result.ids[30:40, 30:40] == 26001).all()


def _dense_fusion(logits: torch.Tensor, instances: Instances, config: FusionConfig) -> np.ndarray:
    """The SPEC steps written literally: full-resolution tensors for every instance, one argmax."""
    height, width = logits.shape[1:]
    scores = instances.scores
    order = [i for i in torch.argsort(scores, descending=True).tolist() if scores[i] >= config.score_threshold]
    taken, survivors = torch.zeros(height, width, dtype=torch.bool), []
    for i in order:
        mask = instances.masks[i]
        if mask.sum() == 0 or (mask & taken).sum() / mask.sum() > config.overlap_threshold:
            continue
        taken |= mask
        survivors.append(i)
    fused = []
    for i in survivors:
        if instances.mask_logits is None:
            ml_a = torch.where(instances.masks[i], config.logit_scale, -config.logit_scale)
        else:
            resized = F.interpolate(instances.mask_logits[i][None, None], (height, width), mode="bilinear")[0, 0]
            ml_a = config.logit_scale * resized
        rows, columns = torch.nonzero(instances.masks[i], as_tuple=True)
        ml_b = torch.zeros(height, width)
        box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
        if instances.boxes is not None:  # the detection box: every pixel it touches (it holds the mask)
            x0, y0, x1, y1 = instances.boxes[i].tolist()
            box = (slice(max(0, math.floor(y0)), min(height, math.ceil(y1))),
                   slice(max(0, math.floor(x0)), min(width, math.ceil(x1))))  # fmt: skip
        ml_b[box] = logits[THING_TRAIN_IDS[instances.classes[i]]][box]
        fused.append((ml_a.sigmoid() + ml_b.sigmoid()) * (ml_a + ml_b))
    winner = torch.cat([logits[list(STUFF_TRAIN_IDS)], torch.stack(fused) if fused else logits[:0]]).argmax(0)
    semantic = logits.argmax(0)
    ids = np.zeros((height, width), dtype=np.int32)
    for train_id in STUFF_TRAIN_IDS:
        region = ((winner < len(STUFF_TRAIN_IDS)) & (semantic == train_id)).numpy()
        if region.sum() >= config.stuff_area * height * width / config.reference_area:
            ids[region] = TRAIN_TO_LABEL_ID[train_id]
    counters: dict[int, int] = {}
    for number, i in enumerate(survivors):
        region = (winner == len(STUFF_TRAIN_IDS) + number).numpy()
        if region.any():
            label = TRAIN_TO_LABEL_ID[THING_TRAIN_IDS[instances.classes[i]]]
            ids[region] = label * 1000 + counters.get(label, 0)
            counters[label] = counters.get(label, 0) + 1
    return ids


#: the defaults, and thresholds and a logit scale away from them (stuff_area 65536: 256 px at 64×128)
FUSION_CONFIGS = {
    "defaults": FusionConfig(),
    "other": FusionConfig(score_threshold=0.3, overlap_threshold=0.2, stuff_area=65536, logit_scale=1.5),
}


@pytest.mark.parametrize("fusion", sorted(FUSION_CONFIGS))
@pytest.mark.parametrize("seed", range(8))
def test_matches_the_dense_implementation(seed: int, fusion: str) -> None:
    """Random smooth or noisy logits; noisy ones make instances win pixels far outside their boxes. Seeds 6 and 7
    give the instances detection boxes larger than their masks (Mask R-CNN's: ML_B fills the detection box)."""
    generator = torch.Generator().manual_seed(seed)
    noisy, binary = seed % 3 == 1, seed % 3 == 2
    logits = torch.randn(19, HEIGHT // 8, WIDTH // 8, generator=generator) * 4
    logits = F.interpolate(logits[None], (HEIGHT, WIDTH), mode="bilinear")[0]
    if noisy:
        logits = logits + torch.randn(19, HEIGHT, WIDTH, generator=generator) * 3
    logits[:, :, -12:] -= 40 * (seed % 2)  # every logit very low: far instances win these pixels
    count = 12
    rows = torch.arange(HEIGHT // 4).float()[None, :, None]
    columns = torch.arange(WIDTH // 4).float()[None, None, :]
    centre_y, centre_x = (
        torch.rand(2, count, 1, 1, generator=generator) * torch.tensor([HEIGHT / 4, WIDTH / 4])[:, None, None, None]
    )
    spread = torch.rand(count, 1, 1, generator=generator) * 6 + 1
    low = 8 * torch.exp(-((rows - centre_y) ** 2 + (columns - centre_x) ** 2) / (2 * spread**2)) - 4
    low = low + torch.randn(count, HEIGHT // 4, WIDTH // 4, generator=generator) * (2.0 if noisy else 0.2)
    masks = F.interpolate(low[None], (HEIGHT, WIDTH), mode="bilinear")[0] > 0
    instances = Instances(
        masks=masks,
        scores=torch.rand(count, generator=generator),
        classes=torch.randint(0, 8, (count,), generator=generator),
        mask_logits=None if binary else low,
    )
    if seed >= 6:
        instances.boxes = _detection_boxes(masks, generator)
    config = FUSION_CONFIGS[fusion]
    result = panoptic_fusion(logits, instances, **asdict(config))
    _check_segments(result)
    np.testing.assert_array_equal(result.ids, _dense_fusion(logits, instances, config))


def _detection_boxes(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Float boxes holding each mask (empty masks: any box), grown by up to 10 px on each side."""
    boxes = torch.zeros(len(masks), 4)
    for index, mask in enumerate(masks):
        rows, columns = torch.nonzero(mask, as_tuple=True)
        if rows.numel():
            boxes[index] = torch.tensor([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]).float()
    grow = torch.rand(len(masks), 4, generator=generator) * 10
    return boxes + grow * torch.tensor([-1.0, -1.0, 1.0, 1.0])


def test_a_detection_box_extends_ml_b_beyond_the_mask() -> None:
    """A car mask of 10×10 inside a 30×30 detection box, semantic logits saying car over the whole box: the instance
    wins the box's pixels through ML_B (FL = (σ(−4) + σ(5))·1 > the stuff logit 0.5); with the mask's own box it
    keeps its mask only."""
    logits = torch.full((19, HEIGHT, WIDTH), -5.0)
    logits[ROAD] = 0.5
    logits[THING_TRAIN_IDS[CAR], 10:40, 20:50] = 5.0
    instances = _instances([_box_mask(20, 30, 30, 40)], [0.9], [CAR], logits=False)
    alone = panoptic_fusion(logits, instances)
    instances.boxes = torch.tensor([[20.0, 10.0, 50.0, 40.0]])
    boxed = panoptic_fusion(logits, instances)
    car = TRAIN_TO_LABEL_ID[THING_TRAIN_IDS[CAR]] * 1000
    assert int((alone.ids == car).sum()) == 100 and int((boxed.ids == car).sum()) == 900
    _check_segments(boxed)


@pytest.mark.parametrize("binary", [False, True])
def test_far_pixels_go_to_an_instance_when_every_stuff_logit_is_lower(binary: bool) -> None:
    """FL outside the box is (σ(ML_A) + ½)·ML_A, finite: it beats stuff logits of −50 anywhere (SPEC's plain argmax)."""
    logits = _logits()
    logits[:, :, -8:] = -50.0
    result = panoptic_fusion(logits, _instances([_box_mask(2, 12, 2, 12)], [0.9], [PERSON], logits=not binary))
    _check_segments(result)
    assert (result.ids[:, -8:] == 24000).all()
    assert (result.ids[20:, 20:-8] == 7).all()


@pytest.mark.parametrize("stuff_logit", [-1.0, -3.0, -8.0])
def test_an_instance_wins_the_pixels_around_its_box_that_its_logits_reach(stuff_logit: float) -> None:
    """Every stuff logit equal: just outside the box, where ML_A is a little below 0, FL = (σ(A) + ½)·A still beats
    it, down to where A reaches about 1.5 × the stuff logit. The exact region must reach that far, not further
    than needed, and the result must equal the dense steps."""
    logits = torch.full((19, HEIGHT, WIDTH), stuff_logit)
    rows = torch.arange(HEIGHT // 4).float()[:, None]
    columns = torch.arange(WIDTH // 4).float()[None, :]
    low = 6 * torch.exp(-((rows - 8) ** 2 + (columns - 15) ** 2) / (2 * 2.5**2)) - 3
    masks = F.interpolate(low[None, None], (HEIGHT, WIDTH), mode="bilinear")[0] > 0
    instances = Instances(masks=masks, scores=torch.tensor([0.9]), classes=torch.tensor([CAR]), mask_logits=low[None])
    config = FusionConfig()
    result = panoptic_fusion(logits, instances, **asdict(config))
    _check_segments(result)
    np.testing.assert_array_equal(result.ids, _dense_fusion(logits, instances, config))
    won = result.ids == 26000
    assert won.sum() > masks.sum()  # beyond the mask (and its box)


def test_extreme_mask_logits() -> None:
    """Logits of ±1000 (σ saturates; the outside bound must not overflow) and masks with a storage offset."""
    logits = _logits()
    masks = torch.zeros(2 * HEIGHT * WIDTH + 1, dtype=torch.bool)[1:].view(2, HEIGHT, WIDTH)  # storage offset 1
    masks[0, 10:20, 10:20] = True
    instances = _instances([masks[0]], [0.9], [CAR])
    instances.masks = masks[:1]
    instances.mask_logits = torch.where(masks[0], 1000.0, -1000.0)[None]
    result = panoptic_fusion(logits, instances)
    _check_segments(result)
    assert (result.ids == np.where(masks[0].numpy(), 26000, 7)).all()


def test_semantic_from_panoptic() -> None:
    logits = _logits()
    logits[SKY, :10] = 9.0
    result = panoptic_fusion(logits, _instances([_box_mask(20, 30, 0, 20)], [0.9], [CAR]))
    semantic = semantic_from_panoptic(result)
    assert (semantic[:10] == SKY).all() and (semantic[20:30, :20] == 11 + CAR).all() and (semantic[40:] == ROAD).all()
    void = semantic_from_panoptic(PanopticPrediction(np.zeros((4, 4), np.int32), []))
    assert (void == 255).all()


def test_inputs_that_break_the_contract_raise_value_error() -> None:
    logits = _logits()
    with pytest.raises(ValueError, match="instance masks are"):
        small = Instances(torch.ones(1, 8, 8, dtype=torch.bool), torch.ones(1), torch.zeros(1, dtype=torch.long))
        panoptic_fusion(logits, small)
    with pytest.raises(ValueError, match="thing indices 0-7"):
        panoptic_fusion(logits, _instances([_box_mask(0, 5, 0, 5)], [0.9], [8]))
    with pytest.raises(ValueError, match="2 mask logits for 1 instances"):
        mismatched = _instances([_box_mask(0, 5, 0, 5)], [0.9], [CAR])
        mismatched.mask_logits = torch.zeros(2, 4, 4)
        panoptic_fusion(logits, mismatched)
    with pytest.raises(ValueError, match=r"must be \[C, H, W\]"):
        panoptic_fusion(logits[0], _instances([], [], []))
    with pytest.raises(ValueError, match="18 channels"):
        panoptic_fusion(logits[:18], _instances([], [], []))
    with pytest.raises(ValueError, match="logit_scale must be positive"):
        panoptic_fusion(logits, _instances([_box_mask(0, 5, 0, 5)], [0.9], [CAR]), logit_scale=-4.0)
