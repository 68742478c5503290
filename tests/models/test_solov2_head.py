import math
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from lpsctl.config import SoloConfig
from lpsctl.errors import ConfigError
from lpsctl.models.solov2 import SOLOv2Head, coordinate_channels
from lpsctl.structures import SoloOutputs, dynamic_mask_logits
from tests.heads import decode_solov2, solo_geometry, solov2_loss

SMALL = SoloConfig(stacked_convs=2, head_channels=64, kernel_dim=64, mask_feature_channels=32)
HEIGHT, WIDTH = 128, 256


def fpn_features(batch: int = 2, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, 256, -(-height // stride), -(-width // stride), generator=generator)
        for stride in (4, 8, 16, 32)
    ]


def test_output_shapes():
    head = SOLOv2Head.from_config(SMALL, 256)
    outputs = head(fpn_features())
    assert isinstance(outputs, SoloOutputs)
    assert [tuple(c.shape) for c in outputs.category_per_level] == [(2, 8, s, s) for s in SMALL.grids]
    assert [tuple(k.shape) for k in outputs.kernel_per_level] == [(2, 64, s, s) for s in SMALL.grids]
    assert tuple(outputs.mask_features.shape) == (2, 64, HEIGHT // 4, WIDTH // 4)
    assert (outputs.mask_features >= 0).all()  # ends in GN + ReLU


def test_input_not_divisible_by_32_still_gives_stride_4_features():
    head = SOLOv2Head.from_config(SMALL, 256)
    outputs = head(fpn_features(batch=1, height=100, width=200))
    assert tuple(outputs.mask_features.shape[-2:]) == (25, 50)


def test_category_prior_initialisation():
    head = SOLOv2Head.from_config(SMALL, 256)
    assert torch.allclose(head.category_predictor.bias, torch.full((8,), -math.log(99)))
    assert head.category_predictor.weight.std().item() == pytest.approx(0.01, rel=0.1)
    outputs = head(fpn_features(batch=1))
    probabilities = torch.cat([c.sigmoid().flatten() for c in outputs.category_per_level])
    assert probabilities.mean().item() == pytest.approx(0.01, rel=0.2)


def test_full_default_widths():
    head = SOLOv2Head(256, 8)
    assert head.kernel_predictor.out_channels == SoloConfig().kernel_dim
    assert len(head.kernel_tower) == SoloConfig().stacked_convs
    assert head.kernel_tower[0][0].in_channels == 256 + 2  # CoordConv
    assert head.category_tower[0][0].in_channels == 256


def test_level_inputs_follow_the_solov2_code():
    features = fpn_features(batch=1)
    levels = SOLOv2Head.level_inputs(features)
    assert [tuple(level.shape[-2:]) for level in levels] == [(16, 32), (16, 32), (8, 16), (4, 8), (4, 8)]
    assert torch.equal(levels[1], features[1]) and torch.equal(levels[3], features[3])
    expected_top = F.interpolate(features[3][:, :, ::2, ::2], size=(4, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(levels[4], expected_top)


def test_coordinate_channels_span_minus_one_to_one():
    coords = coordinate_channels(2, 5, 7, like=torch.zeros(1))
    assert coords.shape == (2, 2, 5, 7)
    assert torch.allclose(coords[0, 0, 3], torch.linspace(-1, 1, 7))  # x along the width
    assert torch.allclose(coords[1, 1, :, 2], torch.linspace(-1, 1, 5))  # y along the height


def test_dynamic_convolution_is_a_1x1_conv_per_kernel():
    kernels, features = torch.randn(5, 16), torch.randn(16, 6, 9)
    expected = F.conv2d(features[None], kernels[:, :, None, None])[0]
    assert torch.allclose(dynamic_mask_logits(kernels, features), expected, atol=1e-5)


def test_bad_configs_and_inputs():
    with pytest.raises(ConfigError, match="solo.grids and solo.scale_ranges need 5"):
        SOLOv2Head.from_config(SoloConfig(grids=(40, 36, 24)), 256)
    with pytest.raises(ConfigError, match="solo.head_channels = 100 must be a multiple of 32"):
        SOLOv2Head.from_config(SoloConfig(head_channels=100), 256)
    with pytest.raises(ValueError, match="expects the 4 FPN maps"):
        SOLOv2Head.from_config(SMALL, 256)(fpn_features()[:3])


def test_gradients_reach_every_parameter():
    head = SOLOv2Head.from_config(SMALL, 256)
    masks = torch.zeros(1, 1, HEIGHT, WIDTH, dtype=torch.bool)
    masks[0, 0, 40:90, 60:130] = True
    losses = solov2_loss(head(fpn_features(batch=1)), list(masks), [torch.tensor([2])], None, SMALL)
    sum(losses.values()).backward()
    missing = [name for name, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_head_overfits_one_square():
    # Adam at 1e-4 plays the part of SOLOv2's warm-up (which starts at 0.01·lr): a large first step saturates Dice
    torch.manual_seed(0)
    head = SOLOv2Head.from_config(SMALL, 256)
    features = fpn_features(batch=1, seed=1)
    square = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool)
    square[0, 44:84, 100:140] = True
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4)
    history = []
    for _ in range(40):
        losses = solov2_loss(head(features), [square], [torch.tensor([4])], None, SMALL)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert history[-1]["loss_solo_mask"] < 0.2 * history[0]["loss_solo_mask"]
    assert history[-1]["loss_solo_category"] < 0.5 * history[0]["loss_solo_category"]
    head.eval()
    (instances,) = decode_solov2(head(features), [(HEIGHT, WIDTH)], [(HEIGHT, WIDTH)], SMALL)
    assert len(instances) >= 1 and instances.classes[0].item() == 4
    intersection = (instances.masks[0] & square[0]).sum().item()
    assert intersection / (instances.masks[0] | square[0]).sum().item() > 0.8


def test_the_head_reports_its_geometry() -> None:
    """Grids, scale ranges and strides come from the head (the criterion and post-processor read them there)."""
    config = replace(SMALL, grids=(20, 18, 12, 8, 6), scale_ranges=((1, 8), (4, 16), (8, 32), (16, 64), (32, 999)))
    head = SOLOv2Head.from_config(config, 256)
    assert head.geometry == solo_geometry(config)
    assert head.geometry.level_strides == (8, 8, 16, 32, 32) and head.geometry.mask_stride == 4
    outputs = head(fpn_features(batch=1))
    assert [c.shape[-1] for c in outputs.category_per_level] == list(head.geometry.grids)
    assert outputs.mask_features.shape[-2:] == (HEIGHT // head.geometry.mask_stride, WIDTH // head.geometry.mask_stride)
