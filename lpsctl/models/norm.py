"""Activated batch norm (SPEC §3.2): `inplace_abn.InPlaceABN` when installed, else a pure-PyTorch `ABN` with the same
constructor and state-dict keys (weight, bias, running_mean, running_var, num_batches_tracked), so checkpoints move
between machines with and without the extension.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpsctl.errors import ConfigError

logger = logging.getLogger(__name__)

NormKind = Literal["auto", "iabn", "torch"]
ACTIVATIONS = ("leaky_relu", "identity")

try:  # optional compiled extension
    from inplace_abn import InPlaceABN, InPlaceABNSync
except ImportError:  # pragma: no cover - depends on the machine
    InPlaceABN = None
    InPlaceABNSync = None


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def _activate(x: Tensor, activation: str, activation_param: float) -> Tensor:
    # out of place: the input of the activation may be saved by batch_norm's backward
    if activation == "leaky_relu":
        return F.leaky_relu(x, negative_slope=activation_param)
    return x


class ABN(nn.BatchNorm2d):
    """BatchNorm2d followed by an activation; a drop-in for `inplace_abn.InPlaceABN` (same arguments and keys).

    Input and output: Tensor[B, C, H, W] (any memory format, any autocast dtype).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str = "leaky_relu",
        activation_param: float = 0.01,
    ) -> None:
        _check_activation(activation)
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.activation = activation
        self.activation_param = activation_param

    def forward(self, x: Tensor) -> Tensor:
        return _activate(super().forward(x), self.activation, self.activation_param)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}[{self.activation_param}]"


class ABNSync(nn.SyncBatchNorm):
    """`ABN` with batch statistics synchronised across DDP processes (the fallback for `InPlaceABNSync`)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str = "leaky_relu",
        activation_param: float = 0.01,
        process_group: object | None = None,
    ) -> None:
        _check_activation(activation)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, process_group)
        self.activation = activation
        self.activation_param = activation_param

    def forward(self, x: Tensor) -> Tensor:
        return _activate(super().forward(x), self.activation, self.activation_param)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}[{self.activation_param}]"


def iabn_available() -> bool:
    """Whether the compiled `inplace_abn` extension is importable."""
    return InPlaceABN is not None


def _resolve(kind: str) -> Literal["iabn", "torch"]:
    if kind == "auto":
        return "iabn" if iabn_available() else "torch"
    if kind == "iabn":
        if not iabn_available():
            raise ConfigError(
                "model.norm=iabn but inplace_abn is not installed; install it "
                "(pip install --no-build-isolation inplace-abn==1.1.0) or set model.norm=torch"
            )
        return "iabn"
    if kind == "torch":
        return "torch"
    raise ConfigError(f"unknown norm kind {kind!r}; expected one of auto, iabn, torch")


def active_norm_name(kind: str = "auto") -> Literal["iabn", "torch"]:
    """The implementation `make_norm(kind)` picks: "iabn" (inplace_abn) or "torch" (pure PyTorch `ABN`)."""
    return _resolve(kind)


def make_norm(kind: str = "auto") -> Callable[..., nn.Module]:
    """The norm class for `kind`: called as `norm(num_features, eps=, momentum=, activation=, activation_param=)`.

    "auto" takes `inplace_abn.InPlaceABN` when importable, else `ABN`; "iabn" requires the extension
    (ConfigError otherwise); "torch" always gives `ABN`.
    """
    resolved = _resolve(kind)
    logger.debug("norm kind %s resolved to %s", kind, resolved)
    if resolved == "iabn":
        assert InPlaceABN is not None
        return InPlaceABN
    return ABN


def is_activated_norm(module: nn.Module) -> bool:
    """Whether `module` is one of the activated norms made by `make_norm` (or their synchronised versions)."""
    classes: tuple[type, ...] = (ABN, ABNSync)
    if InPlaceABN is not None:
        classes += (InPlaceABN, InPlaceABNSync)
    return isinstance(module, classes)


def _sync_class(module: nn.Module) -> type[nn.Module] | None:
    if InPlaceABN is not None and type(module) is InPlaceABN:
        return InPlaceABNSync
    if type(module) is ABN:
        return ABNSync
    return None


def convert_sync_norm(module: nn.Module) -> nn.Module:
    """Replace every `ABN` by `ABNSync` and every `InPlaceABN` by `InPlaceABNSync`, keeping parameters, running
    statistics and state-dict keys; returns the converted module (the root itself may be replaced).

    Use this instead of `nn.SyncBatchNorm.convert_sync_batchnorm`, which would turn `ABN` into a plain
    SyncBatchNorm and silently drop its activation.
    """
    sync_class = _sync_class(module)
    if sync_class is not None:
        converted = sync_class(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            activation=module.activation,
            activation_param=module.activation_param,
        )
        # share the tensors, as nn.SyncBatchNorm.convert_sync_batchnorm does: no copy, optimizer state stays valid
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        new_child = convert_sync_norm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
