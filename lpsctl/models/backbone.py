"""EfficientNet backbone as modified by EfficientPS (SPEC §3.1): `efficientnet_pytorch` blocks without
squeeze-and-excitation, every BatchNorm(+swish) swapped for an activated norm that inherits the BN's weights and
running statistics, taps at strides 4, 8, 16 and 32 (the conv head).
"""

from __future__ import annotations

import logging
import pickle
import urllib.error
from collections.abc import Callable
from pathlib import Path

import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.model import VALID_MODELS, MBConvBlock
from efficientnet_pytorch.utils import load_pretrained_weights
from torch import Tensor, nn

from lpsctl.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

LEAKY_SLOPE = 0.01
TAP_STRIDES = (4, 8, 16, 32)
# what torch.load(weights_only=True) raises for files that are not tensor checkpoints
UNREADABLE_FILE_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError)


def build_efficientnet(name: str, *, pretrained: bool = False, weights_path: str | Path | None = None) -> EfficientNet:
    """The original `efficientnet_pytorch` network, with ImageNet weights from `weights_path` or the internet.

    `image_size=None` selects TensorFlow-style "same" padding computed per input size, so any input size works.
    A local `weights_path` wins over `pretrained` (it needs no network).
    """
    if name not in VALID_MODELS:
        raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(VALID_MODELS)}")
    network = EfficientNet.from_name(name, image_size=None)
    if weights_path is not None:
        load_local_weights(network, Path(weights_path), name)
    elif pretrained:
        try:
            load_pretrained_weights(network, name, load_fc=False, verbose=False)
        except (urllib.error.URLError, OSError) as error:
            raise CheckpointError(
                f"cannot download ImageNet weights for {name} ({error}): run once where the internet is reachable "
                "(efficientnet_pytorch keeps them in ~/.cache/torch/hub/checkpoints), or give the .pth file with "
                "model.backbone_weights=PATH (training from scratch instead: model.pretrained=false)"
            ) from None
        logger.info("backbone %s: ImageNet weights of efficientnet_pytorch's release", name)
    else:
        logger.info("backbone %s: from scratch (no model.pretrained, no model.backbone_weights)", name)
    return network


def load_local_weights(network: EfficientNet, path: Path, name: str) -> None:
    """Load an `efficientnet_pytorch` state dict (the `_fc` classifier is optional) from `path` into `network`."""
    if not path.is_file():
        raise CheckpointError(f"backbone weights file not found: {path}; fix model.backbone_weights")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_FILE_ERRORS as error:
        raise CheckpointError(
            f"cannot read backbone weights {path}: not a PyTorch weights file ({type(error).__name__}); "
            "expected an efficientnet_pytorch .pth state dict"
        ) from error
    if not isinstance(state_dict, dict) or not all(isinstance(value, Tensor) for value in state_dict.values()):
        raise CheckpointError(f"backbone weights {path} are not a state dict of tensors (efficientnet_pytorch format)")
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith("_fc.")}
    # num_batches_tracked is optional: older files lack it and it does not change the network's function
    expected = {key for key in network.state_dict() if not key.startswith("_fc.")}
    missing = sorted(key for key in expected - state_dict.keys() if not key.endswith("num_batches_tracked"))
    unexpected = sorted(state_dict.keys() - expected)
    if missing or unexpected:
        found = {"missing": missing, "unexpected": unexpected}
        problems = [f"{len(keys)} {kind} keys (e.g. {keys[:3]})" for kind, keys in found.items() if keys]
        raise CheckpointError(
            f"backbone weights {path} do not match {name}: {', '.join(problems)}; "
            f"expected an efficientnet_pytorch state dict of {name}"
        )
    try:
        network.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"backbone weights {path} do not fit {name}: {first_line}") from error
    logger.info("loaded backbone weights for %s from %s", name, path)


def activated_norm_from(bn: nn.BatchNorm2d, norm_layer: Callable[..., nn.Module], activation: str) -> nn.Module:
    """A norm from `norm_layer` with `bn`'s eps, momentum, weights and running statistics."""
    norm = norm_layer(
        bn.num_features, eps=bn.eps, momentum=bn.momentum, activation=activation, activation_param=LEAKY_SLOPE
    )
    with torch.no_grad():
        norm.load_state_dict(bn.state_dict())
    return norm.to(bn.weight.device)


def convert_block(block: MBConvBlock, norm_layer: Callable[..., nn.Module]) -> None:
    """EfficientPS block: no squeeze-and-excitation; swish BNs → leaky norm; the projection BN → identity norm."""
    block.has_se = False
    for attribute in ("_se_reduce", "_se_expand"):
        if hasattr(block, attribute):
            delattr(block, attribute)
    if hasattr(block, "_bn0"):
        block._bn0 = activated_norm_from(block._bn0, norm_layer, "leaky_relu")
    block._bn1 = activated_norm_from(block._bn1, norm_layer, "leaky_relu")
    block._bn2 = activated_norm_from(block._bn2, norm_layer, "identity")
    # MBConvBlock.forward applies _swish after _bn0/_bn1; the norms now carry the activation
    block._swish = nn.Identity()


class EfficientNetBackbone(nn.Module):
    """EfficientNet feature extractor (SPEC §3.1).

    `forward(images: Tensor[B, 3, H, W]) -> [Tensor[B, out_channels[i], H / strides[i], W / strides[i]]]` with
    strides (4, 8, 16, 32); the last map is the conv head (2048 channels for B5). H and W should be multiples of 32.
    """

    strides: tuple[int, ...] = TAP_STRIDES

    def __init__(
        self,
        name: str = "efficientnet-b5",
        *,
        norm_layer: Callable[..., nn.Module],
        pretrained: bool = False,
        weights_path: str | Path | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError(f"model.drop_path_rate must be in [0, 1), got {drop_path_rate}")
        network = build_efficientnet(name, pretrained=pretrained, weights_path=weights_path)
        self.name = name
        # stochastic depth, growing linearly with the block index (efficientnet_pytorch's rule; its default is 0.2)
        self.drop_connect_rate = drop_path_rate
        self.stem_conv = network._conv_stem
        self.stem_norm = activated_norm_from(network._bn0, norm_layer, "leaky_relu")
        for block in network._blocks:
            convert_block(block, norm_layer)
        self.blocks = network._blocks
        self.head_conv = network._conv_head
        self.head_norm = activated_norm_from(network._bn1, norm_layer, "leaky_relu")
        # the classifier (_avg_pooling, _dropout, _fc) is left behind with `network`

        self.tap_indices, tap_channels = self._find_taps()
        self.out_channels: tuple[int, ...] = (*tap_channels, int(network._bn1.num_features))

    def _find_taps(self) -> tuple[list[int], list[int]]:
        """Indices and channels of the last block at strides 4, 8 and 16, read from the blocks' arguments."""
        stride = 2  # after the stem
        last_block_at_stride: dict[int, int] = {}
        for index, block in enumerate(self.blocks):
            block_stride = block._block_args.stride
            stride *= block_stride[0] if isinstance(block_stride, list | tuple) else block_stride
            last_block_at_stride[stride] = index
        if stride != TAP_STRIDES[-1] or any(s not in last_block_at_stride for s in TAP_STRIDES[:-1]):
            raise ValueError(f"{self.name} does not reach strides {TAP_STRIDES}")
        indices = [last_block_at_stride[s] for s in TAP_STRIDES[:-1]]
        return indices, [self.blocks[index]._block_args.output_filters for index in indices]

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stem_norm(self.stem_conv(images))
        features: list[Tensor] = []
        for index, block in enumerate(self.blocks):
            # stochastic depth grows linearly with depth, as in efficientnet_pytorch
            x = block(x, drop_connect_rate=self.drop_connect_rate * index / len(self.blocks))
            if index in self.tap_indices:
                features.append(x)
        features.append(self.head_norm(self.head_conv(x)))
        return features
