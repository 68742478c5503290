"""The composed network: shapes, heads switched on and off, loss keys, predict sizes, and the full-size B5 model."""

import pytest
import torch

from lpsctl.config import load_config
from lpsctl.models import PanopticNet, build_model

SMALL = ["model.backbone=efficientnet-b0", "model.norm=torch", "solo.stacked_convs=2", "solo.head_channels=64",
         "solo.kernel_dim=64", "solo.mask_feature_channels=64"]  # fmt: skip


def _square_targets(batch: int, height: int, width: int):
    masks = torch.zeros(1, height, width, dtype=torch.bool)
    masks[0, 40:90, 60:140] = True
    semantic = torch.randint(0, 19, (batch, height, width))
    empty = torch.zeros(0, height, width, dtype=torch.bool)
    return (
        semantic,
        [masks] + [empty] * (batch - 1),
        [torch.tensor([2])] + [torch.zeros(0, dtype=torch.long)] * (batch - 1),
    )


def test_b0_shapes_and_losses():
    torch.manual_seed(0)
    model = build_model(load_config(None, SMALL))
    outputs = model(torch.randn(2, 3, 128, 256))
    assert outputs["semantic"].shape == (2, 19, 128, 256)
    grids = load_config().solo.grids
    assert [tuple(c.shape) for c in outputs.solo.category_per_level] == [(2, 8, s, s) for s in grids]
    assert [tuple(k.shape) for k in outputs.solo.kernel_per_level] == [(2, 64, s, s) for s in grids]
    assert outputs.solo.mask_features.shape == (2, 64, 32, 64)  # stride 4
    losses = model.loss(outputs, *_square_targets(2, 128, 256), None)
    assert set(losses) == {"loss_semantic_ce", "loss_solo_category", "loss_solo_mask"}
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_instance_only_model_and_predict_sizes():
    model = build_model(load_config(None, [*SMALL, "model.semantic_head=false"])).eval()
    assert model.semantic_head is None
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 96, 160))  # not a multiple of 32: the collate pads, the model copes
        predictions = model.predict(outputs, [(90, 150)], [(180, 300)], ["city_000000_000019"])
    assert outputs.semantic is None
    assert predictions[0].semantic_logits is None and predictions[0].image_id == "city_000000_000019"
    assert predictions[0].instances.masks.shape[1:] == (180, 300)
    no_instances = [torch.zeros(0, 96, 160, dtype=torch.bool)], [torch.zeros(0, dtype=torch.long)]
    losses = model.loss(outputs, torch.zeros(1, 96, 160, dtype=torch.long), *no_instances, None)
    assert set(losses) == {"loss_solo_category", "loss_solo_mask"}


def test_semantic_logits_are_cropped_and_resized_to_the_original():
    model = build_model(load_config(None, [*SMALL, "model.instance_head=false"])).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 128, 256))
        (prediction,) = model.predict(outputs, [(100, 200)], [(50, 100)], ["x"])
    expected = torch.nn.functional.interpolate(outputs.semantic[:, :, :100, :200], size=(50, 100), mode="bilinear")
    assert torch.allclose(prediction.semantic_logits, expected[0])
    assert prediction.instances is None


def test_a_model_needs_a_head():
    with pytest.raises(ValueError, match="at least one head"):
        build_model(load_config(None, [*SMALL, "model.semantic_head=false", "model.instance_head=false"]))


@pytest.mark.slow
def test_full_size_b5_model_builds_and_runs_on_cpu():
    model = build_model(load_config(None, ["model.norm=torch"])).eval()
    assert isinstance(model, PanopticNet)
    assert model.backbone.out_channels == (40, 64, 176, 2048)
    parameters = sum(p.numel() for p in model.parameters())
    # backbone 23.15 M + FPN 1.47 M + semantic head 1.21 M + full SOLOv2 head 19.41 M (benchmarks/model_size.py)
    assert 45.0e6 < parameters < 45.5e6, parameters
    with torch.inference_mode():
        outputs = model(torch.randn(1, 3, 512, 1024))
    assert outputs.semantic.shape == (1, 19, 512, 1024)
    assert outputs.solo.mask_features.shape == (1, 256, 128, 256)
    assert [tuple(c.shape[-2:]) for c in outputs.solo.category_per_level] == [(s, s) for s in (40, 36, 24, 16, 12)]
