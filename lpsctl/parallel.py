"""One way to run independent tasks in parallel, for every layer (a leaf module): results in task order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

Task = TypeVar("Task")
Result = TypeVar("Result")


def parallel_map(
    function: Callable[[Task], Result], tasks: Sequence[Task], workers: int, *, processes: bool = False
) -> Iterator[Result]:
    """Results of `function` over `tasks` in order, computed by `workers` threads (or processes), inline for
    workers ≤ 1 or a single task.

    Threads suit work that releases the GIL (PNG decoding, numpy) and need no process start-up, no re-import of the
    caller's `__main__` and no fork of a process that holds CUDA or threads; processes suit pure-Python work
    (`function` and the tasks must then be picklable).
    """
    if workers <= 1 or len(tasks) <= 1:
        yield from map(function, tasks)
        return
    pool: Executor = (ProcessPoolExecutor if processes else ThreadPoolExecutor)(max_workers=min(workers, len(tasks)))
    # processes take tasks in chunks (one round trip per chunk, four chunks per worker); threads one by one
    chunk = max(1, len(tasks) // (4 * workers)) if processes else 1
    with pool:
        yield from pool.map(function, tasks, chunksize=chunk)
