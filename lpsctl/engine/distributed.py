"""Process groups for `torchrun` (DDP): the same command line runs single-process or one process per GPU/CPU slot.
Ctrl-C becomes a stop request that all ranks honour at the same iteration."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def device_for(info: DistInfo) -> torch.device:
    return torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / info.world_size


def all_reduce_max(value: float, info: DistInfo) -> float:
    """The largest of the ranks' values, on every rank."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device_for(info))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank says True (a NaN on one rank stops them all)."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device_for(info))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def broadcast_object(value: Any, info: DistInfo) -> Any:
    """Rank 0's `value` on every rank (picklable objects only)."""
    if not info.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class StopRequest:
    """Ctrl-C, or a scheduler's SIGTERM, as a request to stop: while active, SIGINT and SIGTERM set `requested`
    instead of raising KeyboardInterrupt or ending the process, so the loop ends at an iteration boundary (on every
    rank, via `broadcast_flag`) with whole weights to checkpoint. torchrun forwards both signals to its workers.

    With `escalate`, a second SIGINT raises KeyboardInterrupt at once (single process). Under torchrun it does not:
    a terminal Ctrl-C reaches each worker twice (directly and forwarded by torchrun). SIGTERM never escalates (a
    scheduler may repeat it; its SIGKILL follows anyway). Only the main thread can install signal handlers; elsewhere
    `requested` is only set by the caller.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, *, escalate: bool = True) -> None:
        self.escalate = escalate
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum, previous in self._previous.items():
            # a handler set outside Python reads back as None; the default one is the closest equivalent
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, default if previous is None else previous)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.requested and self.escalate:
            raise KeyboardInterrupt
        self.requested = True
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        again = " (press Ctrl-C again to stop at once)" if self.escalate and signum == signal.SIGINT else ""
        log.warning("%s: stopping after this iteration and writing the checkpoint%s", what, again)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
