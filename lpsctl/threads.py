"""CPU threads for every command (a leaf module, torch-free: it runs before torch is imported).

On a machine whose cores are shared (a laptop doing other work, a CI runner, a cluster node with other jobs),
OpenMP's default of spinning threads collapses PyTorch's throughput: the demo recipe on 2 cores next to 2 busy
processes reached 24 % of its idle iterations with torch's defaults, 51 % with sleeping threads; on an idle machine
sleeping threads cost ~15 % (`python benchmarks/threads.py`, BENCHMARKS.md). So, unless the user decides:

- `OMP_NUM_THREADS` = the cores this process may run on (CPU affinity and a cgroup CPU quota, as containers set;
  torch's own default counts the host's cores);
- `OMP_WAIT_POLICY=PASSIVE` (waiting threads sleep) when other processes are running on the cores as the command
  starts (the kernel's count of runnable tasks, sampled a few times), else OpenMP's default.

Overrides: `OMP_NUM_THREADS` / `OMP_WAIT_POLICY` / `GOMP_SPINCOUNT` set in the environment are kept;
`LPSCTL_THREADS=N` asks for N intra-op threads; `LPSCTL_THREADS=torch` leaves everything to torch. torchrun sets
`OMP_NUM_THREADS=1` per process itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping
from pathlib import Path

from lpsctl.errors import ConfigError


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (`cpu.max`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def other_runnable_tasks(samples: int = 3, interval: float = 0.005) -> int:
    """Tasks other than this one that are running or runnable right now (median of a few reads of /proc/loadavg's
    running count); 0 where it cannot be read."""
    counts = []
    for sample in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        counts.append(running - 1)
        if sample + 1 < samples:
            time.sleep(interval)
    return max(0, sorted(counts)[len(counts) // 2])


def configure(environment: MutableMapping[str, str] | None = None, *, contended: bool | None = None) -> str:
    """Set the OpenMP variables in `environment` (default: this process's, before torch is imported) as the module
    docstring says; `contended` (default: measured) whether other processes use the cores. Returns a one-line
    description for the log."""
    environment = os.environ if environment is None else environment
    choice = environment.get("LPSCTL_THREADS", "").strip()
    if choice == "torch":
        return "threads: torch's defaults (LPSCTL_THREADS=torch)"
    if choice:
        if not (choice.isascii() and choice.isdigit()) or int(choice) < 1:
            raise ConfigError(f"LPSCTL_THREADS={choice!r}: give a number of threads ≥ 1, or 'torch'")
        environment["OMP_NUM_THREADS"] = choice
    else:
        environment.setdefault("OMP_NUM_THREADS", str(usable_cores()))
    if "GOMP_SPINCOUNT" not in environment and "OMP_WAIT_POLICY" not in environment:
        if contended is None:
            contended = other_runnable_tasks() >= max(1, usable_cores() // 2)
        if contended:
            environment["OMP_WAIT_POLICY"] = "PASSIVE"
    wait = environment.get("OMP_WAIT_POLICY", f"GOMP_SPINCOUNT={environment.get('GOMP_SPINCOUNT', 'default')}")
    return f"threads: {environment['OMP_NUM_THREADS']} intra-op, OpenMP wait policy {wait}"
