"""The composed network with its criterion and post-processor: shapes, heads switched on and off, loss keys,
prediction sizes, and the full-size B5 model."""

import pytest
import torch

from lpsctl.config import Config, load_config
from lpsctl.losses.criterion import PanopticCriterion, build_criterion
from lpsctl.models import PanopticNet, build_model
from lpsctl.postprocess.postprocessor import PanopticPostProcessor, build_postprocessor
from lpsctl.structures import Batch

SMALL = ["model.backbone=efficientnet-b0", "model.norm=torch", "solo.stacked_convs=2", "solo.head_channels=64",
         "solo.kernel_dim=64", "solo.mask_feature_channels=64"]  # fmt: skip
MASKRCNN_HEAD_PARAMETERS = 15_073_861  # the full-size Mask R-CNN head, counted in the test below


def _square_batch(batch: int, height: int, width: int, *, squares: bool = True) -> Batch:
    """Random semantic labels; image 0 holds one car square (when `squares`), the others no instance."""
    masks = torch.zeros(1, height, width, dtype=torch.bool)
    masks[0, 40:90, 60:140] = True
    empty = torch.zeros(0, height, width, dtype=torch.bool)
    none = torch.zeros(0, dtype=torch.long)
    return Batch(
        images=torch.randn(batch, 3, height, width),
        semantic=torch.randint(0, 19, (batch, height, width)),
        ignore=torch.zeros(batch, height, width, dtype=torch.bool),
        masks=([masks] if squares else [empty]) + [empty] * (batch - 1),
        classes=([torch.tensor([2])] if squares else [none]) + [none] * (batch - 1),
        image_ids=[f"city_000000_{index:06d}" for index in range(batch)],
        image_sizes=[(height, width)] * batch,
        original_sizes=[(height, width)] * batch,
    )


def _parts(config: Config) -> tuple[PanopticNet, PanopticCriterion, PanopticPostProcessor]:
    """Model, criterion and post-processor, built as the engine builds them."""
    model = build_model(config)
    criterion = build_criterion(
        config, semantic=model.semantic_head is not None, instance_geometry=model.instance_geometry
    )
    return model, criterion, build_postprocessor(config, instance_geometry=model.instance_geometry)


def test_b0_shapes_and_losses():
    torch.manual_seed(0)
    model, criterion, _ = _parts(load_config(None, SMALL))
    batch = _square_batch(2, 128, 256)
    outputs = model(batch.images)
    assert outputs.semantic.shape == (2, 19, 128, 256)
    grids = load_config().solo.grids
    assert model.instance_geometry.grids == grids and model.instance_geometry.level_strides == (8, 8, 16, 32, 32)
    assert [tuple(c.shape) for c in outputs.instance.category_per_level] == [(2, 8, s, s) for s in grids]
    assert [tuple(k.shape) for k in outputs.instance.kernel_per_level] == [(2, 64, s, s) for s in grids]
    assert outputs.instance.mask_features.shape == (2, 64, 32, 64)  # stride 4
    losses = criterion(outputs, batch)
    assert set(losses) == {"loss_semantic_ce", "loss_solo_category", "loss_solo_mask"}
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_instance_only_model_and_predict_sizes():
    model, criterion, postprocessor = _parts(load_config(None, [*SMALL, "model.semantic_head=false"]))
    model.eval()
    assert model.semantic_head is None and criterion.semantic is None
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 96, 160))  # not a multiple of 32: the collate pads, the model copes
        predictions = postprocessor(outputs, [(90, 150)], [(180, 300)], ["city_000000_000019"])
    assert outputs.semantic is None
    assert predictions[0].semantic_logits is None and predictions[0].image_id == "city_000000_000019"
    assert predictions[0].instances.masks.shape[1:] == (180, 300)
    losses = criterion(outputs, _square_batch(1, 96, 160, squares=False))
    assert set(losses) == {"loss_solo_category", "loss_solo_mask"}


def test_semantic_logits_are_cropped_and_resized_to_the_original():
    model, _, postprocessor = _parts(load_config(None, [*SMALL, "model.instance_head=false"]))
    assert model.instance_geometry is None and postprocessor.instance is None
    with torch.no_grad():
        outputs = model.eval()(torch.randn(1, 3, 128, 256))
        (prediction,) = postprocessor(outputs, [(100, 200)], [(50, 100)], ["x"])
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
    # EfficientPS = these parts with the Mask R-CNN head instead: the paper's 40.89 M
    shared = sum(p.numel() for part in (model.backbone, model.fpn, model.semantic_head) for p in part.parameters())
    assert abs(shared + MASKRCNN_HEAD_PARAMETERS - 40.89e6) < 0.02e6, shared
    with torch.inference_mode():
        outputs = model(torch.randn(1, 3, 512, 1024))
    assert outputs.semantic.shape == (1, 19, 512, 1024)
    assert outputs.instance.mask_features.shape == (1, 256, 128, 256)
    assert [tuple(c.shape[-2:]) for c in outputs.instance.category_per_level] == [(s, s) for s in (40, 36, 24, 16, 12)]


def test_the_mask_rcnn_head_has_the_official_layers_parameter_for_parameter():
    """The full-size head (256-channel FPN, SPEC §3.8) counted layer by layer (with the B5 parts the model has the
    paper's 40.89 M: test_full_size_b5_model_builds_and_runs_on_cpu)."""
    head = build_model(load_config(None, ["model.backbone=efficientnet-b0", "model.instance_head=maskrcnn"]))
    rpn = (256 * 256 * 9 + 256) + (256 * 3 + 3) + (256 * 12 + 12)  # 3×3 conv, objectness and box 1×1 per anchor
    box = (256 * 7 * 7 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 9 + 9) + (1024 * 9 * 4 + 9 * 4)
    separable = 256 * 9 + 256 * 256 + 2 * 256  # depthwise, pointwise (no biases), norm weight and bias
    mask = 4 * separable + (256 * 256 * 4 + 256) + (256 * 9 + 9)  # 4 separable convs, 2×2 deconv, 1×1 to 9 classes
    assert sum(p.numel() for p in head.instance_head.parameters()) == rpn + box + mask == MASKRCNN_HEAD_PARAMETERS
