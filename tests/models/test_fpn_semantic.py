import pytest
import torch
from torch import nn

from lpsctl.losses.semantic import ohem_cross_entropy
from lpsctl.models.backbone import EfficientNetBackbone
from lpsctl.models.fpn import TwoWayFPN
from lpsctl.models.norm import ABN
from lpsctl.models.semantic_head import DPC, DPC_DILATIONS, SemanticHead


@pytest.fixture(scope="module")
def branch() -> nn.ModuleList:
    """B0 backbone → 2-way FPN → semantic head, as the joint model composes them."""
    torch.manual_seed(0)
    backbone = EfficientNetBackbone("efficientnet-b0", norm_layer=ABN)
    fpn = TwoWayFPN(backbone.out_channels, 256, norm_layer=ABN)
    head = SemanticHead(256, 19, norm_layer=ABN)
    return nn.ModuleList([backbone, fpn, head])


def run(branch: nn.ModuleList, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    backbone, fpn, head = branch
    levels = fpn(backbone(images))
    return levels, head(levels)


def test_shapes_through_the_semantic_branch(branch: nn.ModuleList):
    levels, logits = run(branch, torch.randn(2, 3, 128, 256))
    assert [tuple(level.shape) for level in levels] == [(2, 256, 128 // s, 256 // s) for s in (4, 8, 16, 32)]
    assert logits.shape == (2, 19, 128, 256)


def test_gradients_reach_every_parameter(branch: nn.ModuleList):
    branch.train().zero_grad()
    _, logits = run(branch, torch.randn(2, 3, 64, 128))
    target = torch.randint(0, 19, (2, 64, 128))
    target[:, :8] = 255
    ohem_cross_entropy(logits, target).backward()
    for name, parameter in branch.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_bf16_autocast_channels_last(branch: nn.ModuleList):
    model = branch.to(memory_format=torch.channels_last).eval()
    images = torch.randn(1, 3, 64, 128).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        levels, logits = run(model, images)
    assert logits.shape == (1, 19, 64, 128) and torch.isfinite(logits.float()).all()
    assert all(level.dtype == torch.bfloat16 for level in levels)
    branch.to(memory_format=torch.contiguous_format)


def test_fpn_mixes_both_paths_and_handles_odd_sizes():
    torch.manual_seed(0)
    fpn = TwoWayFPN((8, 16, 24, 32), 32, norm_layer=ABN).eval()
    sizes = [(15, 31), (8, 16), (4, 8), (2, 4)]
    features = [torch.randn(1, channels, *size) for channels, size in zip(fpn.in_channels, sizes, strict=True)]
    outputs = fpn(features)
    assert [tuple(output.shape) for output in outputs] == [(1, 32, *size) for size in sizes]
    # the finest output depends on the coarsest input (top-down) and the coarsest on the finest (bottom-up)
    changed_coarse = fpn([*features[:3], features[3] + 1])
    changed_fine = fpn([features[0] + 1, *features[1:]])
    assert not torch.allclose(changed_coarse[0], outputs[0]) and not torch.allclose(changed_fine[3], outputs[3])
    with pytest.raises(ValueError, match="expects 4 feature maps, got 3"):
        fpn(features[:3])


def test_dpc_branch_wiring_and_dilations():
    dpc = DPC(16, 8, norm_layer=ABN).eval()
    dilations = [branch[0][0].dilation for branch in dpc.branches]
    assert dilations == [tuple(pair) for pair in DPC_DILATIONS]
    assert dpc.projection[0].in_channels == 5 * 16
    inputs, outputs = {}, {}

    def record(index: int):
        def hook(_: nn.Module, args: tuple[torch.Tensor], output: torch.Tensor) -> None:
            inputs[index], outputs[index] = args[0], output

        return hook

    for index, branch in enumerate(dpc.branches):
        branch.register_forward_hook(record(index))
    x = torch.randn(1, 16, 12, 24)
    dpc(x)
    assert inputs[0] is x
    assert all(inputs[index] is outputs[0] for index in (1, 2, 3))
    assert inputs[4] is outputs[3]
    with pytest.raises(ValueError, match="DPC needs five"):
        DPC(16, 8, norm_layer=ABN, dilations=[(1, 1)] * 4)


def test_semantic_head_size_and_bad_input():
    head = SemanticHead(32, 5, lsfe_channels=16, norm_layer=ABN).eval()
    levels = [torch.randn(1, 32, *size) for size in [(15, 31), (8, 16), (4, 8), (2, 4)]]  # odd sizes at stride 4
    assert head(levels).shape == (1, 5, 60, 124)
    assert head.classifier.in_channels == 4 * 16
    with pytest.raises(ValueError, match=r"expects 4 FPN levels \(P4, P8, P16, P32\), got 3"):
        head(levels[:3])


@pytest.mark.slow
def test_full_size_b5_forward():
    backbone = EfficientNetBackbone("efficientnet-b5", norm_layer=ABN)
    fpn = TwoWayFPN(backbone.out_channels, 256, norm_layer=ABN)
    head = SemanticHead(256, 19, norm_layer=ABN)
    model = nn.ModuleList([backbone, fpn, head]).eval()
    assert backbone.out_channels == (40, 64, 176, 2048)
    with torch.no_grad():
        levels, logits = run(model, torch.randn(1, 3, 512, 1024))
    assert [tuple(level.shape) for level in levels] == [(1, 256, 512 // s, 1024 // s) for s in (4, 8, 16, 32)]
    assert logits.shape == (1, 19, 512, 1024)
    parts = {"backbone": backbone, "fpn": fpn, "head": head}
    counts = {name: sum(parameter.numel() for parameter in part.parameters()) for name, part in parts.items()}
    print(f"B5 semantic branch parameters: {counts} total {sum(counts.values()) / 1e6:.2f} M")
