"""One training loop for `train solo` (SOLOv2 alone) and `train eps` (EfficientPS + SOLOv2 jointly), SPEC §3.7.

Resumable to the bit (model, optimiser, schedule, scaler, RNG and data position are all checkpointed), DDP via torchrun.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import cv2
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lpsctl.config import Config, to_dict
from lpsctl.data.dataset import CityscapesPanoptic, collate_batch
from lpsctl.data.transforms import build_train_transform
from lpsctl.engine import distributed
from lpsctl.engine.checkpoint import load_checkpoint, save_checkpoint
from lpsctl.engine.distributed import DistInfo
from lpsctl.engine.precision import autocast
from lpsctl.engine.rundir import RunDir, check_resumable
from lpsctl.engine.sampler import PositionDataset, ResumableSampler
from lpsctl.engine.solver import build_optimizer, build_scheduler
from lpsctl.engine.state import capture_rng, restore_rng, seed_everything
from lpsctl.errors import LpsctlError
from lpsctl.losses.criterion import PanopticCriterion, build_criterion
from lpsctl.models import PanopticNet, build_model
from lpsctl.models.norm import convert_sync_norm
from lpsctl.structures import Batch, InstanceTargets

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
    """`solo` trains the instance-only model; `eps` the joint model with both heads (the instance head is the
    config's `model.instance_head`, SOLOv2 unless it says maskrcnn)."""
    head = config.model.instance_head if config.model.instance_head != "none" else "solov2"
    return replace(config, model=replace(config.model, semantic_head=mode == "eps", instance_head=head))


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
    """Train `mode`'s model into the run folder `out_dir` (last.pt, best.pt, metrics.jsonl, config.yaml).

    Ctrl-C (or a KeyboardInterrupt raised by `on_step`) stops after the current iteration on every rank and writes
    last.pt; a NaN/inf loss raises TrainingDiverged and leaves the last checkpoint as it was.
    """
    config = config_for_mode(config, mode)
    info = distributed.init_distributed()
    device = distributed.device_for(info)
    run = RunDir(Path(out_dir))
    try:  # the run folder's lock (rank 0) is held until the last checkpoint is written
        state = _prepare_run_dir(run, config, resume, overwrite, info)
        seed_everything(config.solver.seed + info.rank, deterministic=config.solver.deterministic)
        budget = TimeBudget(60 * config.solver.max_minutes)
        loop = _Loop(config, mode, run, info, device, _build(config, device, info, state, budget), budget, validate)
        loop.iteration = loop.saved_at = int(state["iteration"]) if state else 0
        loop.best = state.get("best_metric") if state else None
        interrupted = loop.run(iter(_train_loader(config, info, loop.iteration)), on_step)
        if interrupted and info.is_main:
            log.warning("interrupted at iteration %d; writing %s", loop.iteration, run.last)
        if info.is_main and loop.iteration > loop.saved_at:
            loop.parts.save(run.last, config, loop.iteration, loop.best, finished=not interrupted)
    except TrainingDiverged:
        distributed.shutdown(info)  # every rank raised it together; last.pt stays the last good checkpoint
        raise
    finally:
        run.close()
    distributed.barrier(info)
    distributed.shutdown(info)
    best_checkpoint = run.best if run.best.exists() else None
    return TrainSummary(run.path, loop.iteration, run.last, best_checkpoint, loop.best, interrupted)


@dataclass
class _Loop:
    """The training loop's state: what it trains, where it logs, how far it is."""

    config: Config
    mode: Mode
    run_dir: RunDir
    info: DistInfo
    device: torch.device
    parts: _Parts
    budget: TimeBudget
    validate: Validator | None
    iteration: int = 0
    saved_at: int = 0
    best: float | None = None

    def run(self, batches: Iterator[Batch], on_step: StepCallback | None) -> bool:
        """Iterate to solver.max_iters (or the time budget, or a stop request); True when interrupted."""
        solver, info = self.config.solver, self.info
        self.budget.start = time.monotonic()
        try:
            with distributed.StopRequest(escalate=not info.enabled) as stop:
                while self.iteration < solver.max_iters:
                    waited = time.perf_counter()
                    batch = next(batches)  # the time spent waiting for it is the data loader's share
                    data_seconds = time.perf_counter() - waited
                    values = self.parts.step(batch.to(self.device), self.config, info, self.iteration, self.run_dir)
                    values["data_s"] = data_seconds
                    self.iteration += 1
                    # solver.max_minutes: this iteration becomes the last one (final validation, last.pt)
                    out_of_time = self.budget.update(info) >= 1.0
                    last = self.iteration == solver.max_iters or out_of_time
                    if self._report(values, last, on_step):
                        stop.requested = True  # stop like Ctrl-C: at this iteration's end, on every rank
                    self._validate_and_save(last)
                    if distributed.broadcast_flag(stop.requested, info):
                        return True
                    if out_of_time:
                        log.info("solver.max_minutes (%g) reached at iteration %d", solver.max_minutes, self.iteration)
                        break
        except KeyboardInterrupt:  # a second Ctrl-C (single process): at once, even mid-step; still worth a last.pt
            return True
        return False

    def _report(self, values: dict[str, float], last: bool, on_step: StepCallback | None) -> bool:
        """Log the step (rank 0); True when `on_step` asked to stop (raised KeyboardInterrupt)."""
        if not self.info.is_main:
            return False
        if self.iteration % self.config.solver.log_period == 0 or last:
            self.run_dir.log_metrics({"iteration": self.iteration, **values})
        if on_step is not None:
            try:
                on_step(self.iteration, self.config.solver.max_iters, values)
            except KeyboardInterrupt:
                return True
        return False

    def _validate_and_save(self, last: bool) -> None:
        solver, info = self.config.solver, self.info
        evaluate_now = solver.eval_period > 0 and self.iteration % solver.eval_period == 0
        if self.validate is not None and (evaluate_now or last):
            self.best, improved = _validate(
                self.run_dir, self.parts.model, self.config, self.device, self.mode, self.validate, self.iteration,
                self.best, info,
            )  # fmt: skip
            if improved and info.is_main:
                self.parts.save(self.run_dir.best, self.config, self.iteration, self.best)
        # after validation: last.pt carries the best metric, or a resumed run could overwrite best.pt
        if self.iteration % solver.checkpoint_period == 0 and not last:
            if info.is_main:
                self.parts.save(self.run_dir.last, self.config, self.iteration, self.best)
            self.saved_at = self.iteration


@dataclass
class TimeBudget:
    """The share of solver.max_minutes spent (0 without a budget), the same on every rank; the lr schedule reads it,
    so a run that its budget stops early still ends with the schedule's end (solver.lr_factor)."""

    seconds: float
    start: float = field(default_factory=time.monotonic)
    spent: float = 0.0

    def update(self, info: DistInfo) -> float:
        if self.seconds > 0:
            self.spent = distributed.all_reduce_max((time.monotonic() - self.start) / self.seconds, info)
        return self.spent


@dataclass
class _Parts:
    """What one optimisation step touches; `network` is `model`, or its DDP / torch.compile wrapper."""

    model: PanopticNet
    network: nn.Module
    criterion: PanopticCriterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    window_start: float = 0.0

    def step(self, batch: Batch, config: Config, info: DistInfo, iteration: int, run: RunDir) -> dict:
        """One optimiser step on `batch`; returns the loss terms, `loss`, `lr` and `images_per_s` as floats."""
        images = batch.images.to(memory_format=torch.channels_last) if config.solver.channels_last else batch.images
        targets = None
        if self.model.needs_targets:  # a two-stage head samples its RoIs from the ground truth
            targets = [InstanceTargets(m, c) for m, c in zip(batch.masks, batch.classes, strict=True)]
        with autocast(config.solver.amp, images.device):
            outputs = self.network(images, targets)
        losses = self.criterion(outputs, batch)
        total = cast(torch.Tensor, sum(losses.values()))
        # every rank learns of a NaN on any rank before the backward pass, so all stop together
        if distributed.broadcast_flag(not math.isfinite(float(total.detach())), info):
            raise TrainingDiverged(_divergence_message(total, losses, iteration, run))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        if config.solver.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), config.solver.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # logged values are means over the ranks, so metrics.jsonl describes the whole batch
        reduced = distributed.all_reduce_mean(torch.stack([*losses.values(), total]).detach().float(), info).tolist()
        values = dict(zip([*losses, "loss"], reduced, strict=True)) | {"lr": self.scheduler.get_last_lr()[0]}
        now = time.perf_counter()
        values["images_per_s"] = config.data.batch_size * info.world_size / max(now - self.window_start, 1e-9)
        self.window_start = now
        return values

    def save(self, path: Path, config: Config, iteration: int, best: float | None, finished: bool = False) -> None:
        """finished: the run ended normally (max_iters or solver.max_minutes), as opposed to a periodic save."""
        save_checkpoint(
            path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "iteration": iteration,
                "best_metric": best,
                "rng": capture_rng(),
                "config": to_dict(config),
                "norm": self.model.norm_name,
                "finished": finished,
            },
        )


def _build(
    config: Config, device: torch.device, info: DistInfo, state: dict[str, Any] | None, budget: TimeBudget
) -> _Parts:
    """Model, optimiser, schedule and scaler, restored from `state` when resuming (RNG included), DDP-wrapped."""
    model = build_model(config).to(device)
    log.info(
        "norm: %s, device: %s, world size: %d, %d intra-op threads (OpenMP wait policy %s)",
        model.norm_name, device, info.world_size, torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "default"),
    )  # fmt: skip
    if config.solver.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.solver, config.data.batch_size * info.world_size)
    scheduler = build_scheduler(optimizer, config.solver, lambda: budget.spent)
    scaler = torch.amp.GradScaler(device.type, enabled=config.solver.amp == "fp16" and device.type == "cuda")
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])  # exact for rank 0, whose streams the checkpoint holds
        if info.rank > 0:  # the others get fresh streams of their own rather than copies of rank 0's
            reseed = config.solver.seed + info.rank + 7919 * int(state["iteration"])
            seed_everything(reseed, deterministic=config.solver.deterministic)
    network: nn.Module = model
    if info.enabled:
        # the sync norms share the parameters that the optimiser already holds
        network = DistributedDataParallel(convert_sync_norm(model), find_unused_parameters=False)
    if config.solver.compile:
        network = torch.compile(network)  # type: ignore[assignment]
    criterion = build_criterion(
        config, semantic=model.semantic_head is not None, instance_geometry=model.instance_geometry
    )
    return _Parts(model, network, criterion, optimizer, scheduler, scaler, time.perf_counter())


def _prepare_run_dir(run: RunDir, config: Config, resume: bool, overwrite: bool, info: DistInfo) -> dict | None:
    """Rank 0 checks and prepares the run folder; its error, if any, is raised on every rank (no rank waits forever)."""
    state, error = None, None
    if info.is_main:
        try:
            state = check_resumable(run, config, resume=resume, overwrite=overwrite)
        except LpsctlError as caught:
            error = caught
    message = distributed.broadcast_object(None if error is None else str(error), info)
    if message is not None:
        raise error if error is not None else LpsctlError(message)
    if state is None and resume:
        state = load_checkpoint(run.last)
    return state


def _divergence_message(total: torch.Tensor, losses: dict[str, torch.Tensor], iteration: int, run: RunDir) -> str:
    value = float(total.detach())
    # under DDP the NaN may come from another rank; this one's finite terms are then context only
    what = f"loss became {value}" if not math.isfinite(value) else "loss became NaN/inf on another process"
    terms = ", ".join(f"{key}={float(term.detach()):.4g}" for key, term in losses.items())
    last = run.last if run.last.exists() else "not written yet"
    return (
        f"{what} at iteration {iteration + 1} ({terms}); the last good checkpoint is {last}. "
        "Lower solver.lr or use solver.amp=off"
    )


def _train_loader(config: Config, info: DistInfo, start_iteration: int) -> DataLoader:
    transform = build_train_transform(config.data)
    dataset = CityscapesPanoptic(config.data.root, config.data.train_split, transform=transform)
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
        # its own generator: iterating a DataLoader otherwise draws a base seed from the global RNG, and a resumed
        # run (which starts a fresh iterator after restoring the RNG) would then drift from a straight one
        generator=torch.Generator().manual_seed(config.solver.seed),
        worker_init_fn=_ignore_interrupt,
    )


def _ignore_interrupt(worker_id: int) -> None:
    """Workers leave Ctrl-C and a scheduler's SIGTERM (srun sends it to every process of the job) to the main process:
    a worker they killed would break the batch fetch of the last iteration. Workers still end with the main process
    (the DataLoader's own watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)  # (torch gives each worker 1 thread; OpenCV's resizes would otherwise use every core)


def _validate(
    run: RunDir,
    model: PanopticNet,
    config: Config,
    device: torch.device,
    mode: str,
    validate: Validator,
    iteration: int,
    best: float | None,
    info: DistInfo,
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
