"""EfficientPS's Mask R-CNN head on real torchvision parts: it trains on an image without objects, overfits two
synthetic images (losses fall, a decoded mask matches its object), and decodes masks that are zero outside their
boxes; the criterion's terms and the post-processor's pasting are checked against their definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign

from lpsctl.config import Config, load_config
from lpsctl.data.dataset import CityscapesPanoptic
from lpsctl.data.transforms import build_eval_transform
from lpsctl.losses.criterion import build_criterion
from lpsctl.losses.maskrcnn import MaskRCNNCriterion
from lpsctl.models import build_model
from lpsctl.models.maskrcnn import MaskRCNNHead
from lpsctl.models.norm import make_norm
from lpsctl.postprocess.maskrcnn_decode import MaskRCNNPostProcessor, paste_in_boxes
from lpsctl.postprocess.postprocessor import build_postprocessor
from lpsctl.structures import Batch, Detections, InstanceTargets, MaskRCNNGeometry, MaskRCNNTraining

CHANNELS = 32
SMALL_HEAD = (
    "model.instance_head=maskrcnn",
    "model.norm=torch",
    "maskrcnn.anchor_sizes=[8, 16, 32, 64]",
    "maskrcnn.representation=128",
    "maskrcnn.mask_channels=32",
    "maskrcnn.mask_convs=2",
    "maskrcnn.roi_batch_per_image=64",
)


def small_config(*extra: str) -> Config:
    return load_config(None, [*SMALL_HEAD, *extra])


def head_and_criterion(config: Config) -> tuple[MaskRCNNHead, MaskRCNNCriterion]:
    torch.manual_seed(0)
    head = MaskRCNNHead(config.maskrcnn, CHANNELS, norm_layer=make_norm("torch"))
    criterion = build_criterion(config, semantic=False, instance_geometry=head.geometry).instance
    assert isinstance(criterion, MaskRCNNCriterion)
    return head, criterion


def image_features(images: torch.Tensor) -> list[torch.Tensor]:
    """Fixed features of each FPN stride (4-32) made from the image itself: a frozen random 1×1 projection of the
    image averaged to that stride, with position channels, so a head can find the image's objects in them."""
    generator = torch.Generator().manual_seed(1)
    projection = torch.randn(CHANNELS - 2, 3, 1, 1, generator=generator)
    levels = []
    for stride in (4, 8, 16, 32):
        pooled = F.avg_pool2d(images, stride)
        batch, _, height, width = pooled.shape
        ys = torch.linspace(-1, 1, height)[:, None].expand(height, width)
        xs = torch.linspace(-1, 1, width)[None, :].expand(height, width)
        position = torch.stack([ys, xs])[None].expand(batch, 2, height, width)
        levels.append(torch.cat([torch.tanh(F.conv2d(pooled, projection)), position], dim=1))
    return levels


def criterion_inputs(targets: list[InstanceTargets]) -> tuple:
    return [t.masks for t in targets], [t.classes for t in targets], None


def test_the_head_is_composed_of_torchvision_detection_parts():
    head, _ = head_and_criterion(small_config())
    assert isinstance(head.rpn, RegionProposalNetwork) and isinstance(head.roi_heads, RoIHeads)
    assert isinstance(head.roi_heads.box_roi_pool, MultiScaleRoIAlign)
    assert head.roi_heads.box_roi_pool.output_size == (7, 7) and head.roi_heads.mask_roi_pool.output_size == (14, 14)
    assert head.rpn.anchor_generator.num_anchors_per_location() == [3, 3, 3, 3]
    assert head.roi_heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert head.geometry == MaskRCNNGeometry(level_strides=(4, 8, 16, 32), mask_size=28)
    assert head.roi_heads.box_predictor.cls_score.out_features == 9  # 8 thing classes + background


def test_an_image_without_objects_trains_every_parameter():
    head, criterion = head_and_criterion(small_config())
    features = image_features(torch.rand(1, 3, 64, 128))
    targets = [InstanceTargets(torch.zeros(0, 64, 128, dtype=torch.bool), torch.zeros(0, dtype=torch.long))]
    outputs = head.train()(features, targets)
    assert isinstance(outputs, MaskRCNNTraining)
    losses = criterion(outputs, *criterion_inputs(targets))
    assert set(losses) == {"loss_rpn_objectness", "loss_rpn_box", "loss_rcnn_class", "loss_rcnn_box", "loss_rcnn_mask"}
    assert all(torch.isfinite(value) for value in losses.values())
    # nothing positive: only the objectness and classification terms are non-zero
    assert all(float(losses[name].detach()) == 0.0 for name in ("loss_rpn_box", "loss_rcnn_box", "loss_rcnn_mask"))
    assert float(losses["loss_rpn_objectness"].detach()) > 0 and float(losses["loss_rcnn_class"].detach()) > 0
    assert (outputs.class_labels == 0).all() and not outputs.mask_valid.any()
    sum(losses.values()).backward()
    assert all(parameter.grad is not None for parameter in head.parameters())  # DDP needs each one in the graph


def test_the_criterion_is_the_sum_of_its_definitions():
    """Each term from the sampled predictions, by the formulas of SPEC §3.8."""
    torch.manual_seed(0)
    outputs = MaskRCNNTraining(
        rpn_logits=torch.randn(6),
        rpn_labels=torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
        rpn_deltas=torch.randn(2, 4),
        rpn_targets=torch.randn(2, 4),
        class_logits=torch.randn(4, 9),
        class_labels=torch.tensor([3, 0, 0, 1]),
        box_deltas=torch.randn(2, 4),
        box_targets=torch.randn(2, 4),
        mask_logits=torch.randn(2, 28, 28),
        mask_targets=torch.rand(2, 28, 28).round(),
        mask_valid=torch.tensor([True, True]),
    )
    criterion = build_criterion(small_config("maskrcnn.loss_weight=2"), semantic=False,
                                instance_geometry=MaskRCNNGeometry((4, 8, 16, 32), 28))  # fmt: skip
    losses = criterion.instance(outputs, [], [], None)

    def smooth_l1(x: torch.Tensor, beta: float) -> torch.Tensor:
        return torch.where(x.abs() < beta, 0.5 * x**2 / beta, x.abs() - 0.5 * beta).sum()

    rpn_box = smooth_l1(outputs.rpn_deltas - outputs.rpn_targets, 1 / 9) / 6
    box = smooth_l1(outputs.box_deltas - outputs.box_targets, 1.0) / 4
    p = outputs.mask_logits.sigmoid()
    mask = -(outputs.mask_targets * p.log() + (1 - outputs.mask_targets) * (1 - p).log()).mean()
    assert float(losses["loss_rpn_box"]) == pytest.approx(2 * float(rpn_box), rel=1e-5)
    assert float(losses["loss_rcnn_box"]) == pytest.approx(2 * float(box), rel=1e-5)
    assert float(losses["loss_rcnn_mask"]) == pytest.approx(2 * float(mask), rel=1e-5)
    assert float(losses["loss_rcnn_class"]) == pytest.approx(
        2 * float(F.cross_entropy(outputs.class_logits, outputs.class_labels)), rel=1e-5
    )


def two_synthetic_images(root: Path) -> tuple[torch.Tensor, list[InstanceTargets]]:
    config = load_config(None, ["data.size_divisor=32"])
    dataset = CityscapesPanoptic(root, "train", transform=build_eval_transform(config.data))
    samples = [sample for sample in (dataset[i] for i in range(len(dataset))) if len(sample.classes)][:2]
    images = torch.stack([sample.image for sample in samples])
    return images, [InstanceTargets(sample.masks, sample.classes) for sample in samples]


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def test_the_head_overfits_two_synthetic_images(prepared_root: Path):
    images, targets = two_synthetic_images(prepared_root)
    features = image_features(images)
    head, criterion = head_and_criterion(small_config())
    optimizer = torch.optim.Adam(head.parameters(), lr=2e-3)
    history = []
    for _ in range(120):
        losses = criterion(head.train()(features, targets), *criterion_inputs(targets))
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({name: float(value.detach()) for name, value in losses.items()})
    for name in ("loss_rpn_objectness", "loss_rcnn_class", "loss_rcnn_mask"):
        assert sum(h[name] for h in history[-10:]) < 0.5 * sum(h[name] for h in history[:10]), name

    with torch.no_grad():
        detections = head.eval()(features)
    size = tuple(images.shape[-2:])
    decoded = MaskRCNNPostProcessor(head.geometry)(detections, [size] * 2, [size] * 2)
    for instances, target in zip(decoded, targets, strict=True):
        largest = int(target.masks.sum((1, 2)).argmax())
        best = max(range(len(instances)), key=lambda k: mask_iou(instances.masks[k], target.masks[largest]))
        assert mask_iou(instances.masks[best], target.masks[largest]) > 0.6
        assert int(instances.classes[best]) == int(target.classes[largest])


def test_decoded_masks_are_the_box_stretched_logits_and_zero_outside():
    """Detections at a padded 64×128 input of an image stored at 128×256: boxes scale ×2, masks are the 28×28 logits
    resized bilinearly over the box (as F.interpolate does it), nothing outside the box."""
    torch.manual_seed(0)
    logits = torch.randn(2, 28, 28) + 1.0
    boxes = torch.tensor([[10.0, 4.0, 40.0, 30.0], [60.0, 20.0, 124.0, 60.0]])
    detections = Detections([boxes], [torch.tensor([0.6, 0.9])], [torch.tensor([2, 0])], [logits])
    decoder = MaskRCNNPostProcessor(MaskRCNNGeometry((4, 8, 16, 32), 28))
    (instances,) = decoder(detections, [(64, 128)], [(128, 256)])
    assert instances.scores.tolist() == pytest.approx([0.9, 0.6]) and instances.classes.tolist() == [0, 2]
    assert instances.masks.shape == (2, 128, 256) and instances.mask_logits.shape == (2, 32, 64)
    for index, (x0, y0, x1, y1) in zip((1, 0), (boxes * 2).long().tolist(), strict=True):
        outside = torch.ones(128, 256, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert not instances.masks[index][outside].any()
        expected = F.interpolate(logits[None, 1 - index : 2 - index], size=(y1 - y0, x1 - x0), mode="bilinear")[0, 0]
        pasted = paste_in_boxes(logits[1 - index : 2 - index], (boxes * 2)[1 - index : 2 - index], (128, 256),
                                (128, 256))[0]  # fmt: skip
        assert torch.allclose(pasted[y0:y1, x0:x1], expected, atol=1e-5)
        assert (pasted[outside] == 0).all()
        assert torch.equal(instances.masks[index][y0:y1, x0:x1], expected > 0)
        coarse_outside = torch.ones(32, 64, dtype=torch.bool)
        coarse_outside[y0 // 4 : -(-y1 // 4), x0 // 4 : -(-x1 // 4)] = False
        assert (instances.mask_logits[index][coarse_outside] == 0).all()


def test_the_joint_model_trains_and_decodes_with_the_mask_rcnn_head():
    """PanopticNet passes the ground truth to the two-stage head in training and decodes its detections in eval."""
    config = small_config("model.backbone=efficientnet-b0", "model.fpn_channels=32", "semantic.lsfe_channels=16")
    torch.manual_seed(0)
    model = build_model(config)
    assert model.needs_targets
    criterion = build_criterion(config, semantic=True, instance_geometry=model.instance_geometry)
    masks = torch.zeros(1, 64, 128, dtype=torch.bool)
    masks[0, 10:40, 20:70] = True
    batch = Batch(torch.randn(1, 3, 64, 128), torch.zeros(1, 64, 128, dtype=torch.long), torch.zeros(1, 64, 128,
                  dtype=torch.bool), [masks], [torch.tensor([2])], ["a"], [(64, 128)], [(64, 128)])  # fmt: skip
    with pytest.raises(ValueError, match="needs one InstanceTargets per image"):
        model.train()(batch.images)
    losses = criterion(model(batch.images, [InstanceTargets(masks, torch.tensor([2]))]), batch)
    assert {"loss_semantic_ce", "loss_rcnn_mask"} <= set(losses)
    postprocessor = build_postprocessor(config, instance_geometry=model.instance_geometry)
    with torch.no_grad():
        (prediction,) = postprocessor(model.eval()(batch.images), [(64, 128)], [(64, 128)], ["a"])
    assert prediction.semantic_logits is not None and prediction.instances is not None
    assert prediction.instances.masks.shape[1:] == (64, 128)
