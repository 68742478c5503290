"""Norm folding for inference: outputs unchanged, the norms after convolutions gone, GroupNorm kept."""

import pytest
import torch

from lpsctl.config import load_config
from lpsctl.models import build_model
from lpsctl.models.fold import Activation, fold_norms
from lpsctl.models.norm import ABN

SMALL = [
    "model.backbone=efficientnet-b0", "model.norm=torch", "model.fpn_channels=64", "semantic.lsfe_channels=32",
    "solo.stacked_convs=1", "solo.head_channels=32", "solo.kernel_dim=32", "solo.mask_feature_channels=32",
]  # fmt: skip


def _trained_looking(model: torch.nn.Module) -> None:
    """Norm statistics and affine weights away from their initial values (negative weights too: ABN uses |γ|)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ABN):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.randn(size, generator=generator))
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)


def test_folding_keeps_every_output_and_removes_the_norms() -> None:
    torch.manual_seed(0)
    model = build_model(load_config(None, SMALL))
    _trained_looking(model)
    model.eval()
    images = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        before = model(images)
    norms = sum(isinstance(module, ABN) for module in model.modules())
    folded = fold_norms(model)
    assert folded == norms  # in this network every ABN follows a convolution of its own
    assert not any(isinstance(module, ABN) for module in model.modules())
    assert any(isinstance(module, Activation) for module in model.modules())
    assert any(isinstance(module, torch.nn.GroupNorm) for module in model.modules())  # SOLOv2's head keeps its GN
    with torch.no_grad():
        after = model(images)
    assert torch.allclose(after.semantic, before.semantic, atol=1e-4, rtol=1e-4)
    for got, expected in zip(after.instance.kernel_per_level, before.instance.kernel_per_level, strict=True):
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.allclose(after.instance.mask_features, before.instance.mask_features, atol=1e-4, rtol=1e-4)


def test_folding_needs_eval_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_norms(build_model(load_config(None, SMALL)))
