"""Optimiser and learning-rate schedule (SPEC §3.7): SGD/AdamW, linear warm-up, then step or poly decay."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lpsctl.config import SolverConfig


def scaled_lr(cfg: SolverConfig, total_batch: int) -> float:
    """The base lr for the real total batch (linear scaling rule, Goyal et al. 2017)."""
    return cfg.lr * total_batch / cfg.lr_reference_batch if cfg.lr_reference_batch > 0 else cfg.lr


def build_optimizer(model: nn.Module, cfg: SolverConfig, total_batch: int) -> torch.optim.Optimizer:
    """Weight decay `cfg.weight_decay` on conv/linear weights, `cfg.norm_weight_decay` on norm parameters and
    biases (None: the same, as mmdet 1.x and EfficientPS decay every parameter; 0: detectron2's choice)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    norm_decay = cfg.weight_decay if cfg.norm_weight_decay is None else cfg.norm_weight_decay
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": norm_decay}]
    lr = scaled_lr(cfg, total_batch)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(iteration: int, cfg: SolverConfig, time_spent: float = 0.0) -> float:
    """Multiplier of the base lr at `iteration` (0-based): linear warm-up from `warmup_factor`, then the schedule.

    `time_spent` is the share of `solver.max_minutes` used so far: the schedule is read at whichever is further on,
    the iteration or that share of max_iters, so a run that its time budget ends early still ends annealed."""
    at = min(max(iteration, time_spent * cfg.max_iters), cfg.max_iters)
    if cfg.schedule == "step":
        factor = cfg.gamma ** sum(at >= step for step in cfg.steps)
    else:
        factor = (1.0 - at / max(cfg.max_iters, 1)) ** cfg.poly_power
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1.0 - alpha) + alpha
    return factor if math.isfinite(factor) else 0.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SolverConfig, time_spent: Callable[[], float] = lambda: 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """`time_spent()`: the share of the time budget used when the scheduler steps (see `lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda iteration: lr_factor(iteration, cfg, time_spent()))
