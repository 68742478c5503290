import time
from pathlib import Path

import pytest
import torch
from efficientnet_pytorch import EfficientNet
from torch import nn

from lpsctl.errors import CheckpointError, ConfigError
from lpsctl.models.backbone import EfficientNetBackbone
from lpsctl.models.norm import ABN, iabn_available

NAME = "efficientnet-b0"


@pytest.fixture(scope="module")
def source() -> EfficientNet:
    """An efficientnet_pytorch B0 whose BatchNorms have non-trivial weights and running statistics."""
    torch.manual_seed(0)
    network = EfficientNet.from_name(NAME)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return network.eval()


@pytest.fixture(scope="module")
def weights_file(source: EfficientNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "b0.pth"
    torch.save(source.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def backbone(weights_file: Path) -> EfficientNetBackbone:
    return EfficientNetBackbone(NAME, norm_layer=ABN, weights_path=weights_file).eval()


def converted_name(source_name: str) -> str:
    """Where a BatchNorm of efficientnet_pytorch lives in EfficientNetBackbone."""
    return {"_bn0": "stem_norm", "_bn1": "head_norm"}.get(source_name, source_name.replace("_blocks.", "blocks.", 1))


def test_taps_at_strides_4_to_32(backbone: EfficientNetBackbone, source: EfficientNet):
    images = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        features = backbone(images)
        endpoints = source.extract_endpoints(images)
    assert backbone.strides == (4, 8, 16, 32) and len(features) == 4
    for feature, stride, channels in zip(features, backbone.strides, backbone.out_channels, strict=True):
        assert feature.shape == (2, channels, 128 // stride, 256 // stride)
    reference = [endpoints[f"reduction_{level}"] for level in (2, 3, 4, 6)]
    assert backbone.out_channels == tuple(tensor.shape[1] for tensor in reference)
    assert [feature.shape for feature in features] == [tensor.shape for tensor in reference]


def test_batchnorm_swap_keeps_weights_and_running_stats(backbone: EfficientNetBackbone, source: EfficientNet):
    converted = dict(backbone.named_modules())
    source_norms = {name: module for name, module in source.named_modules() if isinstance(module, nn.BatchNorm2d)}
    assert len(source_norms) == sum(isinstance(module, ABN) for module in backbone.modules())
    for name, bn in source_norms.items():
        norm = converted[converted_name(name)]
        assert isinstance(norm, ABN), name
        assert norm.eps == bn.eps and norm.momentum == bn.momentum, name
        for key, value in bn.state_dict().items():
            assert torch.equal(norm.state_dict()[key], value), f"{name}.{key}"
    assert not any(type(module) is nn.BatchNorm2d for module in backbone.modules())


def test_convs_are_the_source_convs(backbone: EfficientNetBackbone, source: EfficientNet):
    state = backbone.state_dict()
    for name, value in source.state_dict().items():
        if "_conv" in name and "_se_" not in name:
            target = {"_conv_stem.weight": "stem_conv.weight", "_conv_head.weight": "head_conv.weight"}
            assert torch.equal(state[target.get(name, name.replace("_blocks.", "blocks.", 1))], value), name


def test_no_squeeze_excitation_and_activation_pattern(backbone: EfficientNetBackbone, source: EfficientNet):
    names = [name for name, _ in backbone.named_modules()]
    assert not [name for name in names if "_se_" in name]
    assert not any(block.has_se for block in backbone.blocks)
    assert not any("Swish" in type(module).__name__ for module in backbone.modules())
    assert not any(isinstance(module, nn.Linear | nn.Dropout | nn.AdaptiveAvgPool2d) for module in backbone.modules())
    # leaky after every BN that swish followed (stem, head, expansion, depthwise); identity after projections
    expanding = sum(block._block_args.expand_ratio != 1 for block in source._blocks)
    activations = [module.activation for module in backbone.modules() if isinstance(module, ABN)]
    assert activations.count("leaky_relu") == 2 + len(source._blocks) + expanding
    assert activations.count("identity") == len(source._blocks)
    assert all(block._bn2.activation == "identity" for block in backbone.blocks)


def test_bf16_autocast_channels_last():
    model = EfficientNetBackbone(NAME, norm_layer=ABN).to(memory_format=torch.channels_last)
    images = torch.randn(1, 3, 64, 96).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = model(images)
    assert [feature.shape[1] for feature in features] == list(model.out_channels)
    assert all(torch.isfinite(feature.float()).all() for feature in features)


def test_drop_path_is_off_by_default_and_random_in_training_only():
    assert EfficientNetBackbone(NAME, norm_layer=ABN).drop_connect_rate == 0.0  # the official recipes have none
    with pytest.raises(ConfigError, match=r"model.drop_path_rate must be in \[0, 1\)"):
        EfficientNetBackbone(NAME, norm_layer=ABN, drop_path_rate=1.0)
    model = EfficientNetBackbone(NAME, norm_layer=ABN, drop_path_rate=0.2)
    assert model.drop_connect_rate == pytest.approx(0.2)
    images = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    first = model(images)[-1]
    torch.manual_seed(2)
    second = model(images)[-1]
    assert not torch.allclose(first, second)  # random stochastic depth in train mode
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images)[-1], model(images)[-1])


def test_missing_weights_file(tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"backbone weights file not found: .*nope\.pth; fix model.backbone_wei"):
        EfficientNetBackbone(NAME, norm_layer=ABN, weights_path=tmp_path / "nope.pth")


def test_unreadable_weights_file(tmp_path: Path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read backbone weights .*garbage\.pth"):
        EfficientNetBackbone(NAME, norm_layer=ABN, weights_path=path)


def test_weights_of_another_network(tmp_path: Path, source: EfficientNet):
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    message = r"do not match efficientnet-b0: \d+ missing keys .*, 1 unexpected keys \(e.g. \['conv.weight'\]\)"
    with pytest.raises(CheckpointError, match=message):
        EfficientNetBackbone(NAME, norm_layer=ABN, weights_path=path)
    state = source.state_dict()
    state["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"do not fit efficientnet-b0: .*_conv_stem.weight"):
        EfficientNetBackbone(NAME, norm_layer=ABN, weights_path=path)


def test_weights_without_batch_counters_load(tmp_path: Path, source: EfficientNet):
    state = {key: value for key, value in source.state_dict().items() if not key.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = EfficientNetBackbone(NAME, norm_layer=ABN, weights_path=tmp_path / "old.pth")
    assert torch.equal(model.head_norm.running_var, source._bn1.running_var)


def test_unknown_backbone_name():
    with pytest.raises(ConfigError, match="unknown backbone 'efficientnet-b9'; expected one of efficientnet-b0"):
        EfficientNetBackbone("efficientnet-b9", norm_layer=ABN)


def test_pretrained_offline_fails_fast_with_a_hint():
    start = time.monotonic()
    try:
        model = EfficientNetBackbone(NAME, norm_layer=ABN, pretrained=True)
    except CheckpointError as error:
        assert "model.backbone_weights=PATH" in str(error) and NAME in str(error) and "once" in str(error)
        assert time.monotonic() - start < 30
    else:
        assert isinstance(model, EfficientNetBackbone)
        pytest.skip("ImageNet weights were downloadable (online machine or cached file)")


@pytest.mark.skipif(not iabn_available(), reason="inplace_abn is not installed")
def test_checkpoint_moves_between_inplace_abn_and_abn(weights_file: Path, backbone: EfficientNetBackbone):
    from inplace_abn import InPlaceABN

    with_extension = EfficientNetBackbone(NAME, norm_layer=InPlaceABN, weights_path=weights_file).eval()
    assert list(with_extension.state_dict()) == list(backbone.state_dict())
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for ours, theirs in zip(backbone(images), with_extension(images), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
