import math
from dataclasses import replace

import pytest
import torch

from lpsctl.config import SoloConfig
from lpsctl.labels import NUM_THING_CLASSES
from lpsctl.losses.solov2 import dice_loss, focal_loss_sum
from lpsctl.losses.solov2_targets import assign_solov2_targets
from lpsctl.structures import SoloOutputs
from tests.heads import solov2_loss

CFG = SoloConfig(kernel_dim=32)
HEIGHT, WIDTH = 128, 256


def random_outputs(batch: int, seed: int = 0) -> SoloOutputs:
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).requires_grad_()

    return SoloOutputs(
        category_per_level=[leaf(batch, NUM_THING_CLASSES, s, s) for s in CFG.grids],
        kernel_per_level=[leaf(batch, CFG.kernel_dim, s, s) for s in CFG.grids],
        mask_features=leaf(batch, CFG.kernel_dim, HEIGHT // 4, WIDTH // 4),
    )


def ground_truth() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    masks = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.bool)
    masks[0, 44:84, 100:140] = True
    masks[1, 10:120, 20:200] = True
    masks[2, 60:70, 200:230] = True
    return [masks, torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool)], [torch.tensor([0, 3, 7]), torch.zeros(0).long()]


def all_leaves(outputs: SoloOutputs) -> list[torch.Tensor]:
    return [*outputs.category_per_level, *outputs.kernel_per_level, outputs.mask_features]


def test_focal_loss_matches_the_formula():
    logits, labels = torch.randn(4, 5, 3), torch.randint(0, 4, (4, 5))  # 3 classes + background (3)
    weights = torch.rand(4, 5)
    alpha, gamma = 0.25, 2.0
    expected = 0.0
    for index in range(4 * 5):
        i, j = divmod(index, 5)
        for c in range(3):
            p, t = torch.sigmoid(logits[i, j, c]).item(), float(labels[i, j].item() == c)
            p_t = p * t + (1 - p) * (1 - t)
            alpha_t = alpha * t + (1 - alpha) * (1 - t)
            expected += weights[i, j].item() * -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
    assert focal_loss_sum(logits, labels, weights, alpha=alpha, gamma=gamma).item() == pytest.approx(expected, rel=1e-4)


def test_dice_matches_the_formula_and_ignores_invalid_pixels():
    probabilities, targets = torch.rand(3, 6, 7), (torch.rand(3, 6, 7) > 0.5).float()
    valid = torch.rand(3, 6, 7) > 0.3
    for index in range(3):
        p, q = probabilities[index][valid[index]], targets[index][valid[index]]
        expected = 1 - 2 * (p * q).sum() / ((p * p).sum() + (q * q).sum() + 2 * 0.001)
        assert dice_loss(probabilities, targets, valid)[index].item() == pytest.approx(expected.item(), rel=1e-5)
    changed = probabilities.clone()
    changed[~valid] = torch.rand(int((~valid).sum()))
    assert torch.allclose(dice_loss(changed, targets, valid), dice_loss(probabilities, targets, valid))
    assert torch.allclose(dice_loss(targets, targets), torch.full((3,), 0.0), atol=1e-3)


def test_losses_finite_with_gradients_on_random_data():
    outputs = random_outputs(batch=2)
    masks, classes = ground_truth()
    losses = solov2_loss(outputs, masks, classes, None, CFG)
    assert set(losses) == {"loss_solo_category", "loss_solo_mask"}
    assert all(torch.isfinite(value) and value > 0 for value in losses.values())
    sum(losses.values()).backward()
    for leaf in all_leaves(outputs):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    assert outputs.mask_features.grad[0].abs().sum() > 0  # image 0 has instances


def test_empty_ground_truth_gives_zero_mask_loss_with_finite_gradients():
    outputs = random_outputs(batch=2)
    empty = [torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool)] * 2
    losses = solov2_loss(outputs, empty, [torch.zeros(0).long()] * 2, None, CFG)
    assert losses["loss_solo_mask"].item() == 0.0
    assert torch.isfinite(losses["loss_solo_category"]) and losses["loss_solo_category"] > 0
    sum(losses.values()).backward()
    for leaf in all_leaves(outputs):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_category_loss_is_normalised_and_skips_ignored_cells():
    outputs = random_outputs(batch=2)
    masks, classes = ground_truth()
    ignore = torch.zeros(2, HEIGHT, WIDTH, dtype=torch.bool)
    ignore[1, :, 128:] = True
    losses = solov2_loss(outputs, masks, classes, ignore, CFG)
    targets = assign_solov2_targets(
        masks, classes, ignore, grids=CFG.grids, scale_ranges=CFG.scale_ranges, sigma=CFG.sigma,
        num_classes=NUM_THING_CLASSES, mask_feature_size=(HEIGHT // 4, WIDTH // 4),
    )  # fmt: skip
    assert targets.num_positive > 0
    total = 0.0
    for logits, labels, ignored in zip(
        outputs.category_per_level, targets.labels_per_level, targets.ignored_per_level, strict=True
    ):
        cells = logits.detach().permute(0, 2, 3, 1)[~ignored]  # [cells, C]
        one_hot = torch.nn.functional.one_hot(labels[~ignored], NUM_THING_CLASSES + 1)[:, :-1].float()
        p = cells.sigmoid()
        p_t = p * one_hot + (1 - p) * (1 - one_hot)
        alpha_t = 0.25 * one_hot + 0.75 * (1 - one_hot)
        total += (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).sum().item()
    expected = total / (targets.num_positive + 1)
    assert losses["loss_solo_category"].item() == pytest.approx(expected, rel=1e-4)
    # logits under the ignore region (and not positive) do not matter
    with torch.no_grad():
        for logits, ignored in zip(outputs.category_per_level, targets.ignored_per_level, strict=True):
            logits.permute(0, 2, 3, 1)[ignored] = 50.0
    again = solov2_loss(outputs, masks, classes, ignore, CFG)["loss_solo_category"]
    assert again.item() == pytest.approx(losses["loss_solo_category"].item(), rel=1e-5)


def test_loss_weights_scale_the_terms():
    outputs = random_outputs(batch=2)
    masks, classes = ground_truth()
    base = solov2_loss(outputs, masks, classes, None, CFG)
    weighted = solov2_loss(outputs, masks, classes, None, replace(CFG, loss_mask_weight=6.0, loss_category_weight=0.5))
    assert weighted["loss_solo_mask"].item() == pytest.approx(2 * base["loss_solo_mask"].item())
    assert weighted["loss_solo_category"].item() == pytest.approx(0.5 * base["loss_solo_category"].item())


def test_perfect_masks_give_near_zero_dice():
    masks, classes = ground_truth()
    outputs = random_outputs(batch=2)
    # mask features: channel i holds ±20 on instance i's stride-4 mask; every kernel picks the channel of its instance
    small = torch.nn.functional.interpolate(masks[0][None].float(), size=(HEIGHT // 4, WIDTH // 4), mode="area")[0]
    features = torch.zeros(2, CFG.kernel_dim, HEIGHT // 4, WIDTH // 4)
    features[0, :3] = torch.where(small >= 0.5, 20.0, -20.0)
    targets = assign_solov2_targets(
        masks, classes, None, grids=CFG.grids, scale_ranges=CFG.scale_ranges, sigma=CFG.sigma,
        num_classes=NUM_THING_CLASSES, mask_feature_size=(HEIGHT // 4, WIDTH // 4),
    )  # fmt: skip
    kernels = [torch.zeros(2, CFG.kernel_dim, s, s) for s in CFG.grids]
    for level, (cells, instances) in enumerate(
        zip(targets.positive_cells_per_level, targets.positive_instance_per_level, strict=True)
    ):
        kernels[level][cells[:, 0], instances, cells[:, 1], cells[:, 2]] = 1.0
    perfect = SoloOutputs(outputs.category_per_level, kernels, features)
    assert solov2_loss(perfect, masks, classes, None, CFG)["loss_solo_mask"].item() < 1e-3
    wrong = SoloOutputs(outputs.category_per_level, kernels, -features)
    assert solov2_loss(wrong, masks, classes, None, CFG)["loss_solo_mask"].item() > 0.99 * CFG.loss_mask_weight


def test_bad_inputs():
    outputs = random_outputs(batch=2)
    masks, classes = ground_truth()
    with pytest.raises(ValueError, match="one entry per image"):
        solov2_loss(outputs, masks[:1], classes[:1], torch.zeros(2, HEIGHT, WIDTH, dtype=torch.bool), CFG)
    with pytest.raises(ValueError, match="5 category levels but the head has 3 grids"):
        solov2_loss(outputs, masks, classes, None, replace(CFG, grids=(40, 36, 24)))
