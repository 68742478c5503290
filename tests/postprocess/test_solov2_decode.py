import math
from dataclasses import replace

import pytest
import torch

from lpsctl.config import SoloConfig
from lpsctl.labels import NUM_THING_CLASSES
from lpsctl.postprocess.solov2_decode import point_nms
from lpsctl.structures import Instances, SoloOutputs
from tests.heads import decode_solov2

CFG = SoloConfig(kernel_dim=4)
HEIGHT, WIDTH = 128, 256  # padded network input; mask features 32 × 64
STRONG = 10.0


def quiet_outputs(batch: int = 1) -> SoloOutputs:
    """Every category logit at −10 (nothing detected), zero kernels, and mask features whose channels hold ±1
    on fixed rectangles (stride-4 coordinates): channel 0 rows 8-17 × columns 20-35; channel 1 rows 2-6 × 2-5."""
    features = -torch.ones(batch, CFG.kernel_dim, HEIGHT // 4, WIDTH // 4)
    features[:, 0, 8:18, 20:36] = 1.0
    features[:, 1, 2:7, 2:6] = 1.0
    return SoloOutputs(
        category_per_level=[torch.full((batch, NUM_THING_CLASSES, s, s), -STRONG) for s in CFG.grids],
        kernel_per_level=[torch.zeros(batch, CFG.kernel_dim, s, s) for s in CFG.grids],
        mask_features=features,
    )


def random_outputs(*, seed: int, scale: float = 1.0, batch: int = 1) -> SoloOutputs:
    """Random category logits (× `scale`), kernels and mask features: thousands of local maxima, alike scores."""
    generator, grids = torch.Generator().manual_seed(seed), CFG.grids
    return SoloOutputs(
        category_per_level=[scale * torch.randn(batch, NUM_THING_CLASSES, s, s, generator=generator) for s in grids],
        kernel_per_level=[torch.randn(batch, CFG.kernel_dim, s, s, generator=generator) for s in grids],
        mask_features=torch.randn(batch, CFG.kernel_dim, HEIGHT // 4, WIDTH // 4, generator=generator),
    )


def light(outputs: SoloOutputs, level: int, row: int, column: int, cls: int, logit: float, channel: int = 0) -> None:
    outputs.category_per_level[level][0, cls, row, column] = logit
    outputs.kernel_per_level[level][0, channel, row, column] = STRONG


def assert_rounded_block(mask: torch.Tensor, rows: slice, columns: slice, corner: int) -> None:
    """`mask` is the block rows × columns, except that bilinear upsampling may round off `corner`-pixel corners."""
    block = torch.zeros_like(mask)
    block[rows, columns] = True
    assert not (mask & ~block).any()
    core = block.clone()
    for row in (rows.start, rows.stop - corner):
        for column in (columns.start, columns.stop - corner):
            core[row : row + corner, column : column + corner] = False
    assert (mask | ~core).all()
    assert block.sum() - mask.sum() <= 4 * corner * corner


def test_one_strong_cell_decodes_to_its_mask_and_class():
    outputs = quiet_outputs()
    light(outputs, level=1, row=10, column=20, cls=3, logit=STRONG)
    (instances,) = decode_solov2(outputs, [(HEIGHT, WIDTH)], [(2 * HEIGHT, 2 * WIDTH)], CFG)
    assert isinstance(instances, Instances) and len(instances) == 1
    assert instances.classes.tolist() == [3] and instances.classes.dtype == torch.int64
    sharp = 1 / (1 + math.exp(-STRONG))
    assert instances.scores[0].item() == pytest.approx(sharp * sharp, rel=1e-5)  # category × maskness
    # stride-4 rows 8-17 × columns 20-35, at 8× (stride 4, then 2× to the original size)
    assert instances.masks.shape == (1, 2 * HEIGHT, 2 * WIDTH)
    assert_rounded_block(instances.masks[0], slice(64, 144), slice(160, 288), corner=4)
    assert torch.equal(instances.mask_logits[0], STRONG * outputs.mask_features[0, 0])


def test_padding_is_cropped():
    outputs = quiet_outputs()
    light(outputs, level=1, row=10, column=20, cls=3, logit=STRONG)
    (instances,) = decode_solov2(outputs, [(120, 250)], [(120, 250)], CFG)
    assert instances.masks.shape == (1, 120, 250)
    assert instances.mask_logits.shape == (1, 30, 63)  # ceil(120 / 4), ceil(250 / 4)
    assert_rounded_block(instances.masks[0], slice(32, 72), slice(80, 144), corner=2)


def test_zero_candidates_give_empty_instances_of_the_right_shapes():
    instances = decode_solov2(quiet_outputs(batch=2), [(HEIGHT, WIDTH), (120, 250)], [(64, 128), (240, 500)], CFG)
    assert [len(i) for i in instances] == [0, 0]
    assert instances[0].masks.shape == (0, 64, 128) and instances[0].masks.dtype == torch.bool
    assert instances[1].masks.shape == (0, 240, 500)
    assert instances[1].mask_logits.shape == (0, 30, 63)
    assert instances[0].scores.shape == (0,) and instances[0].classes.dtype == torch.int64


def test_duplicates_are_decayed_by_matrix_nms_and_other_classes_are_not():
    outputs = quiet_outputs()
    light(outputs, level=1, row=10, column=20, cls=3, logit=STRONG)
    light(outputs, level=2, row=5, column=5, cls=3, logit=3.0)  # the same mask again, lower score
    light(outputs, level=3, row=2, column=2, cls=5, logit=2.0)  # the same mask, another class
    (instances,) = decode_solov2(outputs, [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], CFG)
    sharp = 1 / (1 + math.exp(-STRONG))
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = sorted([sharp * sharp, sigmoid(3.0) * sharp * math.exp(-2.0), sigmoid(2.0) * sharp], reverse=True)
    assert instances.scores.tolist() == pytest.approx(expected, rel=1e-4)
    assert instances.classes.tolist() == [3, 5, 3]
    # with a stricter update threshold the duplicate goes
    (strict,) = decode_solov2(outputs, [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], replace(CFG, update_threshold=0.2))
    assert strict.classes.tolist() == [3, 5]


def test_masks_no_larger_than_the_level_stride_are_dropped():
    outputs = quiet_outputs()  # channel 1: 5 × 4 = 20 stride-4 pixels
    light(outputs, level=0, row=30, column=30, cls=1, logit=STRONG, channel=1)  # stride 8 < 20: kept
    light(outputs, level=3, row=12, column=12, cls=2, logit=STRONG, channel=1)  # stride 32 ≥ 20: dropped
    (instances,) = decode_solov2(outputs, [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], CFG)
    assert instances.classes.tolist() == [1]
    assert_rounded_block(instances.masks[0], slice(8, 28), slice(8, 24), corner=2)


def test_random_outputs_are_sorted_and_capped():
    outputs = random_outputs(seed=0, scale=2, batch=2)
    cfg = replace(CFG, max_per_image=7, nms_pre=50)
    results = decode_solov2(outputs, [(HEIGHT, WIDTH), (96, 200)], [(HEIGHT, WIDTH), (48, 100)], cfg)
    for instances, size in zip(results, [(HEIGHT, WIDTH), (48, 100)], strict=True):
        assert 0 < len(instances) <= 7
        assert (instances.scores[:-1] >= instances.scores[1:]).all()
        assert ((instances.scores >= cfg.update_threshold) & (instances.scores <= 1)).all()
        assert instances.masks.shape == (len(instances), *size)
        assert ((instances.classes >= 0) & (instances.classes < 8)).all()
    assert results[1].mask_logits.shape == (len(results[1]), 24, 50)


def test_candidates_measured_in_chunks_decode_as_all_at_once(monkeypatch: pytest.MonkeyPatch):
    """Thousands of cells pass the score threshold; measuring them a chunk at a time changes nothing."""
    outputs = random_outputs(seed=1)
    results = {}
    for chunk in (7, 100_000):
        monkeypatch.setattr("lpsctl.postprocess.solov2_decode._CANDIDATE_CHUNK", chunk)
        results[chunk] = decode_solov2(outputs, [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], CFG)[0]
    chunked, whole = results[7], results[100_000]
    assert len(whole) == CFG.max_per_image
    assert torch.equal(chunked.masks, whole.masks) and torch.equal(chunked.classes, whole.classes)
    assert torch.allclose(chunked.scores, whole.scores) and torch.allclose(chunked.mask_logits, whole.mask_logits)


def test_point_nms_keeps_local_maxima_of_2x2_windows():
    heat = torch.tensor([[[0.1, 0.2, 0.1], [0.3, 0.9, 0.8], [0.1, 0.5, 0.4]]])
    kept = point_nms(heat)
    # a cell survives when it is ≥ its top, left and top-left neighbours
    expected = torch.tensor([[[0.1, 0.2, 0.0], [0.3, 0.9, 0.0], [0.0, 0.0, 0.0]]])
    assert torch.equal(kept, expected)


def test_a_candidate_whose_mask_is_nan_is_background_not_a_crash():
    """An overflowed (NaN) kernel on the best cell: its mask has no pixels, so it is dropped like an empty mask, and
    the other candidates decode as without it (the measured-mask buffer never loses one of the nms_pre best)."""
    outputs = random_outputs(seed=3, scale=3)
    cfg = replace(CFG, score_threshold=0.0, nms_pre=5)
    clean = decode_solov2(outputs, [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], cfg)[0]
    level, cls, row, column = 0, 0, 3, 3
    outputs.category_per_level[level][0, :, row, column] = -STRONG
    outputs.category_per_level[level][0, cls, row, column] = 20.0  # the top category score of all cells
    outputs.kernel_per_level[level][0, :, row, column] = math.nan
    broken = decode_solov2(outputs, [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], cfg)[0]
    assert len(broken) > 0 and torch.isfinite(broken.scores).all() and torch.isfinite(broken.mask_logits).all()
    assert torch.equal(broken.masks, clean.masks) and torch.equal(broken.classes, clean.classes)


@pytest.mark.parametrize("size", [1, 2, 12, 40])
def test_point_nms_equals_solov2s_max_pool_formulation_with_ties(size: int):
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(size)
    for levels in (4, 1000):  # few levels: many ties between neighbours
        heat = (torch.rand(8, size, size, generator=generator) * levels).round() / levels
        pooled = F.max_pool2d(heat[None], kernel_size=2, stride=1, padding=1)[0, :, :-1, :-1]
        assert torch.equal(point_nms(heat), heat * (pooled == heat))


def test_bad_inputs():
    with pytest.raises(ValueError, match="1 images in the outputs but 2 image sizes"):
        decode_solov2(quiet_outputs(), [(HEIGHT, WIDTH)] * 2, [(HEIGHT, WIDTH)] * 2, CFG)
    with pytest.raises(ValueError, match="exceeds the padded input"):
        decode_solov2(quiet_outputs(), [(HEIGHT + 32, WIDTH)], [(HEIGHT, WIDTH)], CFG)


def test_measuring_stops_once_no_later_candidate_can_enter_the_nms_pre_best(monkeypatch: pytest.MonkeyPatch):
    """With every local maximum a candidate (`score_threshold=0`), candidates are measured in descending category
    score and measuring stops when no later one can reach the nms_pre best (final score ≤ category score): the same
    instances as measuring all of them, with a fraction of the mask computations (counted by a wrapper around the
    real op)."""
    import lpsctl.postprocess.solov2_decode as decode

    outputs = random_outputs(seed=2, scale=3)
    cfg = replace(CFG, score_threshold=0.0, nms_pre=30)
    measured: list[int] = []
    real = decode.dynamic_mask_logits

    def counting(kernels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        measured.append(len(kernels))
        return real(kernels, features)

    monkeypatch.setattr(decode, "dynamic_mask_logits", counting)
    results = {}
    for chunk in (16, 1_000_000):
        measured.clear()
        monkeypatch.setattr(decode, "_CANDIDATE_CHUNK", chunk)
        results[chunk] = (decode_solov2(outputs, [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], cfg)[0], sum(measured))
    (early, early_count), (whole, whole_count) = results[16], results[1_000_000]
    # every local maximum of the category maps (point NMS zeroes the rest), then the returned instances' masks again:
    # Matrix NMS reuses the measured binary masks of the nms_pre best
    candidates = whole_count - len(whole)
    assert candidates > 1000 and early_count - len(early) < candidates * 3 // 4  # (random kernels: maskness ≈ 0.6)
    assert len(whole) > 0 and torch.equal(early.masks, whole.masks) and torch.equal(early.classes, whole.classes)
    assert torch.allclose(early.scores, whole.scores) and torch.allclose(early.mask_logits, whole.mask_logits)
