"""The CLI's OpenMP settings: sleeping threads, one per usable core, every user choice kept."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from lpsctl.errors import ConfigError
from lpsctl.threads import configure, other_runnable_tasks, usable_cores


def test_one_thread_per_usable_core_and_sleeping_waits_when_the_cores_are_busy():
    environment: dict[str, str] = {}
    assert "PASSIVE" in configure(environment, contended=True)
    assert environment == {"OMP_NUM_THREADS": str(usable_cores()), "OMP_WAIT_POLICY": "PASSIVE"}
    environment = {}
    configure(environment, contended=False)  # an idle machine: OpenMP's own (spinning) waits, the fastest there
    assert environment == {"OMP_NUM_THREADS": str(usable_cores())}
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_busy_processes_are_seen_as_contention():
    """Processes spinning on every core are counted among the runnable tasks (the kernel's own count)."""
    stop = time.monotonic() + 5
    spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(max(1, usable_cores()))]
    for process in spinners:
        process.start()
    try:
        time.sleep(0.5)
        assert other_runnable_tasks() >= max(1, usable_cores() // 2)
        environment: dict[str, str] = {}
        configure(environment)
        assert environment["OMP_WAIT_POLICY"] == "PASSIVE"
    finally:
        for process in spinners:
            process.terminate()
            process.join()


def _spin(stop: float) -> None:
    while time.monotonic() < stop:
        pass


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}),
        ({"GOMP_SPINCOUNT": "1000"}, {"GOMP_SPINCOUNT": "1000"}),
        ({"LPSCTL_THREADS": "5"}, {"OMP_NUM_THREADS": "5", "OMP_WAIT_POLICY": "PASSIVE"}),  # (contended here)
        ({"LPSCTL_THREADS": "torch"}, {}),
    ],
)
def test_the_users_choices_are_kept(given: dict[str, str], expected: dict[str, str]):
    environment = dict(given)
    configure(environment, contended=True)
    assert {k: v for k, v in environment.items() if k != "LPSCTL_THREADS"} == expected | (
        {"OMP_NUM_THREADS": str(usable_cores())} if given == {"GOMP_SPINCOUNT": "1000"} else {}
    )


def test_a_bad_thread_count_is_a_config_error_and_one_line_from_the_cli():
    for bad in ("many", "0", "²", "-2"):
        with pytest.raises(ConfigError, match=f"LPSCTL_THREADS={bad!r}"):
            configure({"LPSCTL_THREADS": bad})
    environment = os.environ | {"LPSCTL_THREADS": "0"}
    result = subprocess.run([sys.executable, "-m", "lpsctl", "config", "show"], env=environment, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and result.stderr.startswith("error: LPSCTL_THREADS='0'"), result.stderr


def test_torch_in_an_lpsctl_process_uses_the_chosen_threads():
    """The settings reach torch: set before it is imported (OpenMP reads them when it starts)."""
    probe = "import sys; from lpsctl import threads; threads.configure(); import torch; print(torch.get_num_threads())"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "LPSCTL_"))}
    result = subprocess.run([sys.executable, "-c", probe], env=environment | {"LPSCTL_THREADS": "1"},
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.stdout.split() == ["1"], result.stderr
