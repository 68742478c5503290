"""Inference-time graph folding: each activated batch norm that directly follows a convolution is folded into it.

In eval mode ABN/iABN (and BatchNorm2d) is y = act(a·x + b) per channel, a = s / sqrt(var + eps) (s = |γ| + eps for
ABN, γ for BatchNorm2d), b = β − a·mean; the convolution before it absorbs a and b (W' = a·W, bias' = a·bias + b), and
only the activation is left. Exact up to float rounding. GroupNorm (SOLOv2's head) depends on the input and stays.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lpsctl.models.norm import ABN


class Activation(nn.Module):
    """What is left of a folded ABN: its activation alone, in place. Its input is the output of the convolution it
    was folded into, which nothing else reads (`fold_norms` folds only such pairs), and a folded model only infers.
    In place it skips allocating a fresh tensor per layer (at 1024×2048 mostly page faults): the B5 forward in
    channels-last took 6.0-7.0 s instead of 8.0 s on the 2-core development machine."""

    def __init__(self, activation: str, slope: float) -> None:
        super().__init__()
        self.activation, self.slope = activation, slope

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.leaky_relu(x, self.slope, inplace=True) if self.activation == "leaky_relu" else x


EXAMPLE_SIZE = (1, 3, 64, 128)  # a small input that finds the conv → norm pairs (they do not depend on the size)


@torch.no_grad()
def fold_norms(model: nn.Module, example: Tensor | None = None) -> int:
    """Fold, in place, every norm whose input is the output of a Conv2d used by nothing else; returns how many.

    The pairs are found by running `example` (Tensor[B, 3, H, W]; default zeros of EXAMPLE_SIZE on the model's
    device) once with hooks that record which module made and which modules read each tensor. `model` must be in
    eval mode (running statistics are folded)."""
    if model.training:
        raise ValueError("fold_norms needs a model in eval mode (it folds the running statistics)")
    if example is None:
        example = torch.zeros(EXAMPLE_SIZE, device=next(model.parameters()).device)
    pairs = _conv_norm_pairs(model, example)
    for conv, norm, parent, name in pairs:
        scale, shift = _affine(norm)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias)
        setattr(parent, name, _remainder(norm))
    return len(pairs)


def _affine(norm: Any) -> tuple[Tensor, Tensor]:
    """(a, b) of the norm's eval-mode y = a·x + b, Tensor[C] each."""
    scale = norm.weight.abs() + norm.eps if isinstance(norm, ABN) or _is_inplace_abn(norm) else norm.weight
    a = scale / torch.sqrt(norm.running_var + norm.eps)
    return a, norm.bias - a * norm.running_mean


def _remainder(norm: Any) -> nn.Module:
    if isinstance(norm, nn.BatchNorm2d):
        return nn.Identity()
    return Activation(norm.activation, float(norm.activation_param))


def _is_inplace_abn(module: nn.Module) -> bool:
    return type(module).__name__ in {"InPlaceABN", "InPlaceABNSync"}


def _foldable(module: Any) -> bool:
    if isinstance(module, nn.BatchNorm2d):
        return module.affine and module.track_running_stats
    if isinstance(module, ABN) or _is_inplace_abn(module):
        has_statistics = bool(module.affine) and module.running_mean is not None
        return has_statistics and module.activation in ("leaky_relu", "identity")
    return False


def _conv_norm_pairs(model: nn.Module, example: Tensor) -> list[tuple[nn.Conv2d, nn.Module, nn.Module, str]]:
    """(conv, norm, norm's parent, norm's attribute name) for each norm whose every call took the output of one and
    the same conv, an output no other module read (convs and norms shared across calls stay paired)."""
    made_by: dict[int, nn.Module] = {}
    readers: dict[int, set[nn.Module]] = {}
    producers: dict[nn.Module, set[nn.Module | None]] = {}
    keep: list[Tensor] = []  # ids stay unique while the tensors live

    def record(module: nn.Module, inputs: tuple, output: object) -> None:
        for tensor in inputs:
            if isinstance(tensor, Tensor):
                readers.setdefault(id(tensor), set()).add(module)
                keep.append(tensor)
        if _foldable(module) and inputs and isinstance(inputs[0], Tensor):
            producers.setdefault(module, set()).add(made_by.get(id(inputs[0])))
        if isinstance(output, Tensor):
            made_by[id(output)] = module
            keep.append(output)

    leaves = [module for module in model.modules() if not list(module.children())]
    handles = [module.register_forward_hook(record) for module in leaves]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    read_by: dict[nn.Module, set[nn.Module]] = {}
    for tensor, module in made_by.items():
        read_by.setdefault(module, set()).update(readers.get(tensor, set()))
    parents = {child: (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    pairs = []
    for norm, made in producers.items():
        conv = next(iter(made)) if len(made) == 1 else None
        if isinstance(conv, nn.Conv2d) and read_by.get(conv) == {norm} and norm in parents:
            pairs.append((conv, norm, *parents[norm]))
    return pairs
