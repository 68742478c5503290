"""One training loop for `train solo` (SOLOv2 alone) and `train eps` (EfficientPS + SOLOv2 jointly), SPEC §3.7.

Resumable to the bit (model, optimiser, schedule, scaler, RNG and data position are all checkpointed), DDP via torchrun.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lpsctl.config import Config, to_dict
from lpsctl.data.dataset import CityscapesPanoptic, collate_batch
from lpsctl.data.transforms import build_train_transform
from lpsctl.engine import distributed
from lpsctl.engine.checkpoint import load_checkpoint, save_checkpoint
from lpsctl.engine.rundir import RunDir, check_resumable
from lpsctl.engine.sampler import PositionDataset, ResumableSampler
from lpsctl.engine.solver import build_optimizer, build_scheduler
from lpsctl.engine.state import capture_rng, restore_rng, seed_everything, unwrap
from lpsctl.errors import LpsctlError
from lpsctl.models import PanopticNet, build_model
from lpsctl.models.norm import convert_sync_norm

log = logging.getLogger(__name__)
Mode = Literal["eps", "solo"]
#: `on_step(iteration, max_iters, values)` after every optimiser step (values: loss terms, lr, images/s)
StepCallback = Callable[[int, int, dict[str, float]], None]
#: `validate(model, config, device, mode) -> metrics` (PQ for eps, mask AP for solo); injected by the caller
Validator = Callable[[PanopticNet, Config, torch.device, str], dict[str, float]]


class TrainingDiverged(LpsctlError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainSummary:
    run_dir: Path
    iterations: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: float | None
    interrupted: bool


def config_for_mode(config: Config, mode: Mode) -> Config:
    """`solo` trains the instance-only model; `eps` the joint model with both heads."""
    heads = {"semantic_head": mode == "eps", "instance_head": True}
    return replace(config, model=replace(config.model, **heads))


def train(
    config: Config,
    out_dir: Path,
    *,
    mode: Mode,
    resume: bool = False,
    overwrite: bool = False,
    on_step: StepCallback | None = None,
    validate: Validator | None = None,
) -> TrainSummary:
    config = config_for_mode(config, mode)
    info = distributed.init_distributed()
    device = distributed.device_for(info)
    run = RunDir(Path(out_dir))
    state = check_resumable(run, config, resume=resume, overwrite=overwrite) if info.is_main else None
    distributed.barrier(info)
    if state is None and resume:
        state = load_checkpoint(run.last)
    start = int(state["iteration"]) if state else 0
    seed_everything(config.solver.seed + info.rank, deterministic=config.solver.deterministic)

    model = build_model(config).to(device)
    log.info("norm: %s, device: %s, world size: %d", model.norm_name, device, info.world_size)
    if config.solver.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.solver, config.data.batch_size * info.world_size)
    scheduler = build_scheduler(optimizer, config.solver)
    use_fp16 = config.solver.amp == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_fp16)
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
    network: nn.Module = model
    if info.enabled:
        network = DistributedDataParallel(convert_sync_norm(model), find_unused_parameters=False)
    if config.solver.compile:
        network = torch.compile(network)  # type: ignore[assignment]

    loader = _train_loader(config, info, start)
    best = state.get("best_metric") if state else None
    amp_context = _autocast(config, device)
    iteration, interrupted, window_start = start, False, time.perf_counter()
    try:
        for batch in loader:
            if iteration >= config.solver.max_iters:
                break
            batch = batch.to(device)
            images = batch.images.to(memory_format=torch.channels_last) if config.solver.channels_last else batch.images
            with amp_context():
                outputs = network(images)
            losses = unwrap(network).loss(outputs, batch.semantic, batch.masks, batch.classes, batch.ignore)
            total = sum(losses.values())
            if distributed.broadcast_flag(not math.isfinite(float(total.detach())), info):
                raise TrainingDiverged(
                    f"loss became {float(total.detach())} at iteration {iteration + 1} "
                    f"({', '.join(f'{k}={float(v):.4g}' for k, v in losses.items())}); the last good checkpoint is "
                    f"{run.last if run.last.exists() else 'not written yet'}. Lower solver.lr or use solver.amp=off"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
            if config.solver.clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.solver.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            iteration += 1
            values = {k: float(v.detach()) for k, v in losses.items()}
            values |= {"loss": float(total.detach()), "lr": scheduler.get_last_lr()[0]}
            elapsed = time.perf_counter() - window_start
            values["images_per_s"] = config.data.batch_size * info.world_size / max(elapsed, 1e-9)
            window_start = time.perf_counter()
            if on_step is not None and info.is_main:
                on_step(iteration, config.solver.max_iters, values)
            if info.is_main and (iteration % config.solver.log_period == 0 or iteration == config.solver.max_iters):
                run.log_metrics({"iteration": iteration, **values})
            periodic = iteration % config.solver.checkpoint_period == 0
            if periodic and iteration < config.solver.max_iters and info.is_main:
                _save(run.last, model, optimizer, scheduler, scaler, config, iteration, best, info)
            evaluate_now = config.solver.eval_period > 0 and iteration % config.solver.eval_period == 0
            if validate is not None and (evaluate_now or iteration == config.solver.max_iters):
                best, improved = _validate(run, model, config, device, mode, validate, iteration, best, info)
                if improved and info.is_main:
                    _save(run.best, model, optimizer, scheduler, scaler, config, iteration, best, info)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted at iteration %d; writing %s", iteration, run.last)
    finally:
        if info.is_main and iteration > start:
            _save(run.last, model, optimizer, scheduler, scaler, config, iteration, best, info)
        distributed.barrier(info)
        distributed.shutdown(info)
    return TrainSummary(run.path, iteration, run.last, run.best if run.best.exists() else None, best, interrupted)


def _train_loader(config: Config, info: distributed.DistInfo, start_iteration: int) -> DataLoader:
    dataset = CityscapesPanoptic(config.data.root, config.data.train_split, transform=build_train_transform(config.data))
    sampler = ResumableSampler(
        batch_size=config.data.batch_size, world_size=info.world_size, rank=info.rank, start_iteration=start_iteration
    )
    return DataLoader(
        PositionDataset(dataset, config.solver.seed),
        batch_size=config.data.batch_size,
        sampler=sampler,
        num_workers=config.data.num_workers,
        collate_fn=partial(collate_batch, size_divisor=config.data.size_divisor),
        persistent_workers=config.data.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def _autocast(config: Config, device: torch.device) -> Callable[[], Any]:
    if config.solver.amp == "fp16" and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    if config.solver.amp == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def _validate(
    run: RunDir,
    model: PanopticNet,
    config: Config,
    device: torch.device,
    mode: str,
    validate: Validator,
    iteration: int,
    best: float | None,
    info: distributed.DistInfo,
) -> tuple[float | None, bool]:
    """Validation runs on rank 0 (the others wait); the headline metric is PQ (eps) or mask AP (solo)."""
    improved = False
    if info.is_main:
        model.eval()
        metrics = validate(model, config, device, mode)
        model.train()
        run.log_metrics({"iteration": iteration, **{f"val/{k}": v for k, v in metrics.items()}})
        headline = metrics.get("pq" if mode == "eps" else "ap")
        if headline is not None and (best is None or headline > best):
            best, improved = headline, True
    distributed.barrier(info)
    return best, improved


def _save(
    path: Path,
    model: PanopticNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: Config,
    iteration: int,
    best: float | None,
    info: distributed.DistInfo,
) -> None:
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": iteration,
            "best_metric": best,
            "rng": capture_rng(),
            "config": to_dict(config),
            "norm": model.norm_name,
            "kind": "eps" if model.semantic_head is not None else "solo",
        },
    )
