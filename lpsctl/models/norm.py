"""Activated batch norm (SPEC §3.2): `inplace_abn.InPlaceABN` when installed, else the pure-PyTorch `ABN` below with
the same constructor, the same state-dict keys (weight, bias, running_mean, running_var, num_batches_tracked) and the
same arithmetic, so checkpoints move between machines with and without the extension.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
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


class ABN(nn.Module):
    """Batch norm + activation ("leaky_relu" or "identity"), a drop-in for `inplace_abn.InPlaceABN`.

    Like InPlaceABN, the affine scale is `|weight| + eps` (inplace_abn needs a positive scale to invert the
    activation in backward); plain BatchNorm2d would use `weight`. Keeping InPlaceABN's arithmetic makes a checkpoint
    give the same outputs with either implementation. Input and output: Tensor[B, C, H, W], any memory format.
    """

    _version = 2  # as inplace_abn: version 2 added num_batches_tracked

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
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.activation = activation
        self.activation_param = activation_param
        self.weight: nn.Parameter | None = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _momentum(self) -> float:
        """The running-average factor of this step (cumulative average when momentum is None), counting the step."""
        if not (self.training and self.num_batches_tracked is not None):
            return 0.0 if self.momentum is None else self.momentum
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _scale(self) -> Tensor | None:
        return None if self.weight is None else self.weight.abs() + self.eps

    def _normalize(self, x: Tensor, momentum: float) -> Tensor:
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x, self.running_mean, self.running_var, self._scale(), self.bias, use_batch_stats, momentum, self.eps
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self._normalize(x, self._momentum())
        if self.activation == "leaky_relu":
            # out of place: autograd of the norm may still need this tensor
            return F.leaky_relu(x, negative_slope=self.activation_param)
        return x

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, *args: Any) -> None:
        version = local_metadata.get("version")
        if (version is None or version < 2) and self.track_running_stats:
            state_dict.setdefault(prefix + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"activation={self.activation}[{self.activation_param}]"
        )


class ABNSync(ABN):
    """`ABN` whose training batch statistics are computed over all processes of `group` (DDP), the fallback for
    `InPlaceABNSync`. Two differentiable all-reduces (sum, then squared deviations) keep the variance exact; outside
    training or without an initialised process group it behaves exactly like `ABN`.
    """

    def __init__(self, *args: Any, group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def _normalize(self, x: Tensor, momentum: float) -> Tensor:
        synchronise = self.training and dist.is_available() and dist.is_initialized()
        if not synchronise or dist.get_world_size(self.group) == 1:
            return super()._normalize(x, momentum)
        x_float = x.float()
        local = torch.cat([x_float.sum(dim=(0, 2, 3)), x.new_full((1,), x.numel() / x.shape[1], dtype=torch.float)])
        total = dist_functional.all_reduce(local, group=self.group)
        count, mean = total[-1], total[:-1] / total[-1]
        centred = x_float - mean.view(1, -1, 1, 1)
        variance = dist_functional.all_reduce(centred.square().sum(dim=(0, 2, 3)), group=self.group) / count
        if self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), momentum)
                unbiased = variance.detach() * count / (count - 1).clamp(min=1)
                self.running_var.lerp_(unbiased, momentum)
        scale = torch.rsqrt(variance + self.eps)
        affine_scale = self._scale()
        if affine_scale is None or self.bias is None:
            return (centred * scale.view(1, -1, 1, 1)).to(x.dtype)
        return (centred * (scale * affine_scale).view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)).to(x.dtype)


def iabn_available() -> bool:
    """Whether the compiled `inplace_abn` extension is importable."""
    return InPlaceABN is not None


def active_norm_name(kind: str = "auto") -> Literal["iabn", "torch"]:
    """The implementation `make_norm(kind)` picks: "iabn" (inplace_abn) or "torch" (pure-PyTorch `ABN`)."""
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


def make_norm(kind: str = "auto") -> Callable[..., nn.Module]:
    """The norm class for `kind`, called as `norm(num_features, eps=, momentum=, activation=, activation_param=)`.

    "auto" takes `inplace_abn.InPlaceABN` when importable, else `ABN`; "iabn" requires the extension
    (ConfigError otherwise); "torch" always gives `ABN`.
    """
    resolved = active_norm_name(kind)
    logger.debug("norm kind %s resolved to %s", kind, resolved)
    if resolved == "iabn":
        assert InPlaceABN is not None
        return InPlaceABN
    return ABN


def convert_sync_norm(module: nn.Module) -> nn.Module:
    """Replace every `ABN` by `ABNSync` and every `InPlaceABN` by `InPlaceABNSync` (for DDP), sharing parameters and
    running statistics, so state-dict keys and values stay the same; returns the converted module.

    Any other BatchNorm is left alone; `nn.SyncBatchNorm.convert_sync_batchnorm` is not needed for this network.
    """
    if type(module) is ABN:
        sync_class: type[nn.Module] = ABNSync
    elif InPlaceABN is not None and type(module) is InPlaceABN:
        sync_class = InPlaceABNSync
    else:
        for name, child in module.named_children():
            converted_child = convert_sync_norm(child)
            if converted_child is not child:
                setattr(module, name, converted_child)
        return module
    converted = sync_class(
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        activation=module.activation,
        activation_param=module.activation_param,
    )
    # shared tensors, as in nn.SyncBatchNorm.convert_sync_batchnorm: no copy, optimiser references stay valid
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        setattr(converted, name, getattr(module, name))
    converted.train(module.training)
    return converted
