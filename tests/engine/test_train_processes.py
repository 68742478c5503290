"""`lpsctl train` as its own process: two-rank CPU DDP under torchrun (gloo), and Ctrl-C followed by --resume."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lpsctl.config import load_config
from lpsctl.engine.checkpoint import checkpoint_config
from lpsctl.engine.distributed import DistInfo, StopRequest
from lpsctl.engine.train import _train_loader
from lpsctl.models import build_model
from tests.engine.train_helpers import (
    PYTHON,
    SYNTHETIC_EPS,
    checkpoint,
    cli_arguments,
    loss_lines,
    metrics_lines,
    subprocess_environment,
    tiny_overrides,
)


def test_two_process_ddp_trains_and_only_rank_0_writes(prepared_root: Path, tmp_path: Path):
    out = tmp_path / "run"
    overrides = tiny_overrides(prepared_root, data__batch_size=1, solver__max_iters=2, solver__checkpoint_period=1)
    command = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lpsctl"]
    result = subprocess.run(
        command + cli_arguments("eps", out, overrides),
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("events.out.tfevents"))  # TensorBoard
    assert files == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]
    lines = metrics_lines(out)
    assert [line["iteration"] for line in lines if "loss" in line] == [1, 2]  # rank 0 alone logs
    assert [line["iteration"] for line in lines if "val/pq" in line] == [2]  # validated once, on rank 0
    state = checkpoint(out / "last.pt")
    assert state["iteration"] == 2 and state["config"]["data"]["batch_size"] == 1
    # no DDP "module." prefixes, no extra sync-norm state: the keys of a single-process model
    assert state["model"].keys() == build_model(checkpoint_config(state, "last.pt")).state_dict().keys()
    assert result.stdout.count("done at iteration 2") == 1


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_writes_a_loadable_checkpoint_and_resume_continues(prepared_root: Path, tmp_path: Path, stop_signal):
    """Ctrl-C in a terminal, or a scheduler's SIGTERM (srun signals every process of the job: the loader worker
    too), stops at an iteration's end with a loadable last.pt; --resume continues from it."""
    out = tmp_path / "run"
    overrides = tiny_overrides(
        prepared_root, data__num_workers=1, solver__max_iters=1000, solver__checkpoint_period=1000
    )
    arguments = [PYTHON, "-m", "lpsctl", *cli_arguments("solo", out, overrides, "--no-validate")]
    # its own process group, so that the signal reaches the DataLoader worker too, as a terminal's Ctrl-C does
    process = subprocess.Popen(
        arguments,
        env=subprocess_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() or not loss_lines(out):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no training progress within 120 s"
            time.sleep(0.2)
        os.killpg(process.pid, stop_signal)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted at iteration" in stdout + stderr
    stopped = checkpoint(out / "last.pt")["iteration"]
    assert stopped >= 1
    assert [line["iteration"] for line in loss_lines(out)] == list(range(1, stopped + 1))

    resumed = [PYTHON, "-m", "lpsctl", *cli_arguments("solo", out, [*overrides, f"solver.max_iters={stopped + 1}"])]
    result = subprocess.run(
        [*resumed, "--resume", "--no-validate"],
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint(out / "last.pt")["iteration"] == stopped + 1
    assert [line["iteration"] for line in loss_lines(out)] == list(range(1, stopped + 2))


def test_stop_request_defers_the_first_ctrl_c_and_escalates_on_the_second():
    before = signal.getsignal(signal.SIGINT)
    with StopRequest(escalate=True) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before
    with StopRequest(escalate=False) as stop:  # torchrun: every signal only asks to stop
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert stop.requested and signal.getsignal(signal.SIGINT) is before
    terminate = signal.getsignal(signal.SIGTERM)
    with StopRequest(escalate=True) as stop:  # a scheduler's SIGTERM only asks to stop, however often it comes
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
    assert stop.requested and signal.getsignal(signal.SIGTERM) is terminate


def test_dataloader_workers_leave_ctrl_c_to_the_main_process(prepared_root: Path):
    """A terminal's Ctrl-C reaches the workers too; one that died of it would break the fetch the main process may be
    waiting on while it finishes the iteration."""
    config = load_config(SYNTHETIC_EPS, tiny_overrides(prepared_root, data__num_workers=1))
    batches = iter(_train_loader(config, DistInfo(), start_iteration=0))
    next(batches)
    os.kill(batches._workers[0].pid, signal.SIGINT)  # type: ignore[attr-defined]
    time.sleep(0.5)
    images = [next(batches).images for _ in range(4)]  # more than the prefetched batches
    assert all(image.shape == (2, 3, 64, 128) for image in images)
    del batches


def test_a_checkpoint_that_does_not_fit_on_disk_is_one_line_and_keeps_the_last(prepared_root: Path, tmp_path: Path):
    """A real write failure of the OS (a file-size limit, RLIMIT_FSIZE: the kernel refuses the bytes past it as a full
    disk would): torch's writer fails inside its C++ container; the user sees one line, and last.pt, the one before,
    is intact with no temporary file left."""
    out = tmp_path / "run"
    overrides = tiny_overrides(prepared_root, solver__max_iters=2, solver__checkpoint_period=2)
    first = subprocess.run(
        [PYTHON, "-m", "lpsctl", *cli_arguments("solo", out, overrides, "--no-validate")],
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    before = (out / "last.pt").read_bytes()
    limit = len(before) // 2  # far above config.yaml and metrics.jsonl, below a checkpoint

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    resumed = cli_arguments("solo", out, [*overrides, "solver.max_iters=4"], "--resume", "--no-validate")
    result = subprocess.run(
        [PYTHON, "-m", "lpsctl", *resumed],
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if not line.startswith("INFO ")]  # (the run's log)
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot write checkpoint {out / 'last.pt'}: the write "), (
        errors
    )
    assert "MB free on its disk (full disk, quota or file-size limit?); the previous checkpoint is kept" in errors[0]
    assert (out / "last.pt").read_bytes() == before
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
