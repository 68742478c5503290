import pytest
import torch

from lpsctl.config import SoloConfig
from lpsctl.labels import NUM_THING_CLASSES
from lpsctl.losses.solov2_targets import assign_solov2_targets, instance_geometry

CFG = SoloConfig()  # grids (40, 36, 24, 16, 12); scale ranges (1-144, 72-288, 144-576, 288-1152, 576-4096); σ 0.2
HEIGHT, WIDTH = 128, 256  # level 0 (S = 40): cells of 3.2 × 6.4 pixels
BACKGROUND = NUM_THING_CLASSES


def square(top: int, left: int, size: int) -> torch.Tensor:
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def assign(masks: list[torch.Tensor], classes: list[list[int]], ignore: torch.Tensor | None = None):
    return assign_solov2_targets(
        masks,
        [torch.tensor(c, dtype=torch.long) for c in classes],
        ignore,
        grids=CFG.grids,
        scale_ranges=CFG.scale_ranges,
        sigma=CFG.sigma,
        num_classes=NUM_THING_CLASSES,
        mask_feature_size=(HEIGHT // 4, WIDTH // 4),
    )


def cells_of(targets, level: int) -> set[tuple[int, int, int]]:
    return {tuple(cell) for cell in targets.positive_cells_per_level[level].tolist()}


def test_one_square_gives_the_hand_computed_cells_on_level_0_only():
    # 40×40 square, rows 44-83, columns 100-139: centre of mass (y, x) = (64, 120), scale 40 → level 0 only.
    # Centre cell: row ⌊64/3.2⌋ = 20, column ⌊120/6.4⌋ = 18. Centre region ±0.5·0.2·40 = ±4 px:
    # rows ⌊60/3.2⌋ = 18 … ⌊68/3.2⌋ = 21 → clamped to 19…21; columns ⌊116/6.4⌋ = 18 … ⌊124/6.4⌋ = 19 (inside 17…19).
    targets = assign([square(44, 100, 40)[None]], [[3]])
    expected = {(0, row, column) for row in (19, 20, 21) for column in (18, 19)}
    assert cells_of(targets, 0) == expected
    assert all(cells_of(targets, level) == set() for level in range(1, 5))
    labels = targets.labels_per_level[0][0]
    assert (labels[19:22, 18:20] == 3).all() and (labels != BACKGROUND).sum() == 6
    assert all((labels == BACKGROUND).all() for labels in targets.labels_per_level[1:])
    assert targets.positive_instance_per_level[0].tolist() == [0] * 6
    assert targets.num_positive == 6
    # the mask target at stride 4: rows 11-20, columns 25-34
    expected_small = torch.zeros(HEIGHT // 4, WIDTH // 4, dtype=torch.bool)
    expected_small[11:21, 25:35] = True
    assert torch.equal(targets.masks[0], expected_small)
    assert targets.valid.all() and not any(i.any() for i in targets.ignored_per_level)


def test_a_mid_size_square_lands_on_the_two_overlapping_levels():
    # scale 100 lies in 1-144 and 72-288 only
    targets = assign([square(14, 70, 100)[None]], [[0]])
    assert cells_of(targets, 0) and cells_of(targets, 1)
    assert not any(cells_of(targets, level) for level in (2, 3, 4))


def test_the_smaller_of_two_objects_wins_shared_cells_whatever_the_input_order():
    # both centred on (64, 120), level 0. Large 60×60 (±6 px): rows 19-21 (⌊58/3.2⌋ = 18 clamped), columns
    # ⌊114/6.4⌋ = 17 … ⌊126/6.4⌋ = 19. Small 20×20 (±2 px): rows ⌊62/3.2⌋ = 19 … ⌊66/3.2⌋ = 20, columns 18-19.
    large, small = square(34, 90, 60), square(54, 110, 20)
    for masks, classes, small_index in (([large, small], [2, 5], 1), ([small, large], [5, 2], 0)):
        targets = assign([torch.stack(masks)], [classes])
        labels = targets.labels_per_level[0][0]
        assert (labels[19:21, 18:20] == 5).all()
        large_only = torch.zeros_like(labels, dtype=torch.bool)
        large_only[19:22, 17:20] = True
        large_only[19:21, 18:20] = False
        assert (labels[large_only] == 2).all() and (labels != BACKGROUND).sum() == 9
        cells = targets.positive_cells_per_level[0]
        winners = targets.positive_instance_per_level[0]
        for (image, row, column), winner in zip(cells.tolist(), winners.tolist(), strict=True):
            expected = small_index if (19 <= row <= 20 and 18 <= column <= 19) else 1 - small_index
            assert winner == expected, (image, row, column)


def test_crowd_cells_are_ignored_unless_positive():
    ignore = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool)
    ignore[0, :64, :128] = True
    targets = assign([square(44, 100, 40)[None]], [[3]], ignore)
    # level 0: a cell's centre pixel is (⌊(r + 0.5)·3.2⌋, ⌊(c + 0.5)·6.4⌋), inside the crowd for r, c ≤ 19
    expected = torch.zeros(40, 40, dtype=torch.bool)
    expected[:20, :20] = True
    expected[19, 18:20] = False  # positive cells of the square stay positive
    assert torch.equal(targets.ignored_per_level[0][0], expected)
    # level 4 (S = 12): ⌊(r + 0.5)·128/12⌋ < 64 ⇔ r ≤ 5; ⌊(c + 0.5)·256/12⌋ < 128 ⇔ c ≤ 5
    assert torch.equal(targets.ignored_per_level[4][0], torch.nn.functional.pad(torch.ones(6, 6), (0, 6, 0, 6)).bool())
    expected_valid = torch.ones(HEIGHT // 4, WIDTH // 4, dtype=torch.bool)
    expected_valid[:16, :32] = False
    assert torch.equal(targets.valid[0], expected_valid)


def test_empty_image_and_empty_masks_give_no_positives():
    empty = torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool)
    blank = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool)  # an instance whose mask was cropped away
    targets = assign([empty, blank], [[], [6]])
    assert targets.num_positive == 0
    assert all((labels == BACKGROUND).all() for labels in targets.labels_per_level)
    assert all(cells.shape == (0, 3) for cells in targets.positive_cells_per_level)
    assert targets.masks.shape == (1, HEIGHT // 4, WIDTH // 4)


def test_cells_carry_their_image_index():
    targets = assign([torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool), square(44, 100, 40)[None]], [[], [7]])
    assert cells_of(targets, 0) == {(1, row, column) for row in (19, 20, 21) for column in (18, 19)}
    assert (targets.labels_per_level[0][0] == BACKGROUND).all()
    assert (targets.labels_per_level[0][1] == 7).sum() == 6


def test_instance_geometry():
    masks = torch.stack([square(10, 20, 30), torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)])
    masks[0, 10, 20:25] = False  # centre moves down a little; the box does not change
    area, centre_y, centre_x, box_height, box_width = instance_geometry(masks)
    rows, columns = masks[0].nonzero().float().unbind(1)
    assert area.tolist() == [895.0, 0.0]
    assert centre_y[0].item() == pytest.approx(rows.mean().item() + 0.5)
    assert centre_x[0].item() == pytest.approx(columns.mean().item() + 0.5)
    assert (box_height.tolist(), box_width.tolist()) == ([30.0, 0.0], [30.0, 0.0])


def test_bad_inputs():
    mask = square(44, 100, 40)[None]
    with pytest.raises(ValueError, match=r"classes must lie in 0..7"):
        assign([mask], [[8]])
    with pytest.raises(ValueError, match="1 masks but 2 classes"):
        assign([mask], [[1, 2]])
    with pytest.raises(ValueError, match="padded input size"):
        assign([mask, mask[:, :64]], [[1], [1]])
    with pytest.raises(ValueError, match="one entry per image"):
        assign([mask], [[1]], torch.zeros(2, HEIGHT, WIDTH, dtype=torch.bool))
