"""`train eps|solo` end to end on the synthetic dataset: outputs, exact resume, NaN stop, run-folder safety, bf16."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from lpsctl.cli.app import main
from lpsctl.config import load_config
from lpsctl.engine.rundir import RunDir
from lpsctl.engine.train import Mode, TimeBudget, TrainingDiverged, train
from lpsctl.engine.validation import validate
from lpsctl.errors import CheckpointError, LpsctlError
from lpsctl.losses.criterion import PanopticCriterion
from tests.engine.train_helpers import (
    SYNTHETIC_EPS,
    assert_same_tensors,
    checkpoint,
    cli_arguments,
    loss_lines,
    metrics_lines,
    one_thread,
    tiny_overrides,
)

LOSS_TERMS = {
    "eps": {"loss_semantic_ce", "loss_solo_category", "loss_solo_mask"},
    "solo": {"loss_solo_category", "loss_solo_mask"},
}


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    with one_thread():
        yield


def run_cli(arguments: list[str]) -> int | str | None:
    """`lpsctl ARGUMENTS` in this process; its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    return exit_info.value.code


@pytest.fixture(scope="module", params=["eps", "solo"])
def cli_run(
    request: pytest.FixtureRequest, prepared_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Mode, Path]:
    """`lpsctl train <mode>` with validation after iterations 2 and 3 (default norm: inplace_abn where installed)."""
    out = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    overrides = [item for item in tiny_overrides(prepared_root, solver__eval_period=2) if not item.startswith("model.")]
    with one_thread():
        assert run_cli(cli_arguments(request.param, out, overrides)) == 0
    return request.param, out


def test_each_command_writes_a_complete_run_folder(cli_run: tuple[Mode, Path]):
    mode, run = cli_run
    files = sorted(
        p.name for p in run.iterdir() if not p.name.startswith("events.out.tfevents")
    )  # TensorBoard, when installed
    assert files == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]
    assert load_config(run / "config.yaml").model.semantic_head is (mode == "eps")
    losses = loss_lines(run)
    assert [line["iteration"] for line in losses] == [1, 2, 3]
    for line in losses:
        terms = {key for key in line if key.startswith("loss_")}
        assert terms == LOSS_TERMS[mode]
        assert math.isfinite(line["loss"]) and line["loss"] == pytest.approx(sum(line[key] for key in terms), rel=1e-5)
        # the wait for the batch is part of the time between two step ends (images_per_s = batch 2 / that time)
        assert 0 <= line["data_s"] <= 2 / line["images_per_s"] + 1e-3
    headline = "val/pq" if mode == "eps" else "val/ap"
    validations = [line for line in metrics_lines(run) if headline in line]
    assert [line["iteration"] for line in validations] == [2, 3]
    assert all(0.0 <= line[headline] <= 100.0 for line in validations)
    last, best = checkpoint(run / "last.pt"), checkpoint(run / "best.pt")
    assert last["iteration"] == 3 and best["iteration"] in (2, 3)
    assert "kind" not in last and last["config"]["model"]["semantic_head"] is (mode == "eps")
    assert best["best_metric"] == max(line[headline] for line in validations)
    assert len(last["optimizer"]["state"]) > 0 and last["scheduler"]["last_epoch"] == 3


def test_existing_run_folder_is_refused_and_overwrite_restarts(
    cli_run: tuple[Mode, Path], tmp_path: Path, prepared_root: Path
):
    mode, run = cli_run[0], tmp_path / "run"
    shutil.copytree(cli_run[1], run)
    config = load_config(SYNTHETIC_EPS, tiny_overrides(prepared_root, solver__max_iters=1))
    with pytest.raises(LpsctlError, match=r"already holds a run .*--resume.*--overwrite"):
        train(config, run, mode=mode)
    assert checkpoint(run / "last.pt")["iteration"] == 3  # untouched
    summary = train(config, run, mode=mode, overwrite=True)
    assert summary.iterations == 1 and not summary.interrupted
    assert checkpoint(run / "last.pt")["iteration"] == 1
    assert not (run / "best.pt").exists()  # a new run starts without the old best
    assert [line["iteration"] for line in metrics_lines(run)] == [1]


def test_resume_and_overwrite_exclude_each_other(prepared_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    arguments = cli_arguments("eps", tmp_path / "run", tiny_overrides(prepared_root), "--resume", "--overwrite")
    assert run_cli(arguments) == 2
    assert "--resume and --overwrite exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_model_names_the_keys(cli_run: tuple[Mode, Path], tmp_path: Path, prepared_root: Path):
    mode, run = cli_run[0], tmp_path / "run"
    shutil.copytree(cli_run[1], run)
    before = (run / "last.pt").read_bytes()
    overrides = tiny_overrides(prepared_root, solo__kernel_dim=16, model__fpn_channels=64)
    code = run_cli(cli_arguments(mode, run, overrides, "--resume"))
    assert code == 2
    config = load_config(SYNTHETIC_EPS, overrides)
    with pytest.raises(CheckpointError, match=r"model\.fpn_channels: 256 in the checkpoint, 64 now.*solo\.kernel_dim"):
        train(config, run, mode=mode, resume=True)
    other_mode: Mode = "solo" if mode == "eps" else "eps"
    with pytest.raises(CheckpointError, match=r"model\.semantic_head"):
        train(load_config(SYNTHETIC_EPS, tiny_overrides(prepared_root)), run, mode=other_mode, resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(config, tmp_path / "empty", mode=mode, resume=True)
    assert (run / "last.pt").read_bytes() == before


def test_metrics_after_the_resumed_checkpoint_are_dropped(tmp_path: Path):
    run = RunDir(tmp_path)
    for iteration in (1, 2, 3):
        run.log_metrics({"iteration": iteration, "loss": 1.0 / iteration})
    run.log_metrics({"iteration": 2, "val/pq": 50.0})
    with run.metrics.open("a") as file:
        file.write('{"iteration": 4, "lo')  # a process killed mid-line
    run.drop_metrics_after(2)
    assert metrics_lines(tmp_path) == [
        {"iteration": 1, "loss": 1.0},
        {"iteration": 2, "loss": 0.5},
        {"iteration": 2, "val/pq": 50.0},
    ]
    run.drop_metrics_after(0)
    assert run.metrics.read_text() == ""
    RunDir(tmp_path / "missing").drop_metrics_after(0)  # no metrics file yet: nothing to do


def _stop_at(iteration: int):
    def on_step(current: int, total: int, values: dict[str, float]) -> None:
        if current == iteration:
            raise KeyboardInterrupt

    return on_step


@pytest.mark.parametrize(("mode", "workers"), [("eps", 0), ("solo", 1)])
def test_resume_is_exact(mode: Mode, workers: int, prepared_root: Path, tmp_path: Path):
    """2 + 2 iterations with an interruption (Ctrl-C from the callback) in between = 4 straight, to the bit."""
    overrides = tiny_overrides(
        prepared_root,
        data__num_workers=workers,
        solver__max_iters=4,
        solver__checkpoint_period=100,
        solver__warmup_iters=1,
        solver__deterministic=True,
    )
    config = load_config(SYNTHETIC_EPS, overrides)
    train(config, tmp_path / "straight", mode=mode)
    first = train(config, tmp_path / "split", mode=mode, on_step=_stop_at(2))
    assert first.interrupted and first.iterations == 2
    assert checkpoint(tmp_path / "split" / "last.pt")["iteration"] == 2
    second = train(config, tmp_path / "split", mode=mode, resume=True)
    assert second.iterations == 4 and not second.interrupted
    straight, split = checkpoint(tmp_path / "straight" / "last.pt"), checkpoint(tmp_path / "split" / "last.pt")
    assert_same_tensors(straight["model"], split["model"], "model")
    assert_same_tensors(straight["optimizer"], split["optimizer"], "optimizer")
    assert_same_tensors(straight["scheduler"], split["scheduler"], "scheduler")
    without_speed = [
        [{k: v for k, v in line.items() if k not in {"images_per_s", "data_s"}} for line in loss_lines(tmp_path / name)]
        for name in ("straight", "split")
    ]
    assert without_speed[0] == without_speed[1] and len(without_speed[0]) == 4


def test_last_checkpoint_carries_the_best_metric_of_its_iteration(prepared_root: Path, tmp_path: Path):
    """Validation comes before the periodic last.pt, so a run resumed from it knows the best score (else a worse
    model could later overwrite best.pt)."""
    overrides = tiny_overrides(prepared_root, solver__max_iters=4, solver__eval_period=2, solver__checkpoint_period=2)
    config = load_config(SYNTHETIC_EPS, overrides)
    summary = train(config, tmp_path / "run", mode="solo", on_step=_stop_at(2), validate=validate)
    assert summary.interrupted and summary.best_metric is not None
    last, best = checkpoint(tmp_path / "run" / "last.pt"), checkpoint(tmp_path / "run" / "best.pt")
    assert last["iteration"] == best["iteration"] == 2
    assert last["best_metric"] == best["best_metric"] == summary.best_metric


def test_time_budget_ends_the_run_with_validation_and_a_checkpoint(prepared_root: Path, tmp_path: Path):
    overrides = tiny_overrides(prepared_root, solver__max_iters=50, solver__max_minutes=1e-6)
    metrics: list[float] = []

    def counting_validate(*args) -> dict[str, float]:
        metrics.append(1.0)
        return validate(*args)

    summary = train(load_config(SYNTHETIC_EPS, overrides), tmp_path / "run", mode="eps", validate=counting_validate)
    assert summary.iterations == 1 and not summary.interrupted
    assert metrics == [1.0]  # the final validation ran once
    assert checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 1


def test_the_lr_schedule_reads_the_time_budget(prepared_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With a budget, each step's lr comes from the share of it spent (pinned here at 3/4 from the first step on)."""

    def three_quarters_spent(self: TimeBudget, info: object) -> float:
        self.spent = 0.75
        return self.spent

    monkeypatch.setattr(TimeBudget, "update", three_quarters_spent)
    overrides = tiny_overrides(
        prepared_root,
        solver__max_minutes=60,
        solver__lr=0.01,
        solver__lr_reference_batch=0,
        solver__schedule="poly",
        solver__poly_power=2,
        solver__max_iters=4,
        solver__warmup_iters=2,
        solver__warmup_factor=0.5,
    )
    train(load_config(SYNTHETIC_EPS, overrides), tmp_path / "run", mode="eps")
    logged = [row["lr"] for row in metrics_lines(tmp_path / "run") if "lr" in row]
    # the lr logged after step i is the one for 0-based iteration i: lr · (1 - t / 4)² with t the iteration or, once
    # the scheduler has read the budget (from the second step on), 3/4 of max_iters = 3 if that is further;
    # iteration 1 is still in the warm-up, × (0.5 · (1 - 1/2) + 1/2) = 0.75
    expected = [0.01 * (1 - 1 / 4) ** 2 * 0.75, 0.01 * (1 - 3 / 4) ** 2, 0.01 * (1 - 3 / 4) ** 2, 0.0]
    assert logged == pytest.approx(expected)
    assert logged[1] < 0.01 * (1 - 2 / 4) ** 2  # ahead of the iteration-only schedule


def _nan_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """The criterion returns NaN for its `call`-th evaluation (counting from 1)."""
    original, calls = PanopticCriterion.__call__, []

    def loss(self: PanopticCriterion, *args, **kwargs) -> dict[str, torch.Tensor]:
        calls.append(1)
        losses = original(self, *args, **kwargs)
        if len(calls) == call:
            losses["loss_solo_mask"] = losses["loss_solo_mask"] * float("nan")
        return losses

    monkeypatch.setattr(PanopticCriterion, "__call__", loss)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    monkeypatch: pytest.MonkeyPatch, prepared_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    overrides = tiny_overrides(prepared_root, solver__max_iters=5, solver__checkpoint_period=2)
    _nan_at(monkeypatch, call=4)
    assert run_cli(cli_arguments("solo", tmp_path / "run", overrides)) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: loss became nan at iteration 4 (") and "loss_solo_mask=nan" in error
    assert "last good checkpoint is" in error and "Traceback" not in error
    assert len(error.strip().splitlines()) <= 3  # one line, perhaps wrapped by the console
    assert checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 2  # not overwritten by the diverged state
    assert [line["iteration"] for line in loss_lines(tmp_path / "run")] == [1, 2, 3]
    # resuming replays iteration 3 from the checkpoint; its first metrics line is not kept twice
    assert run_cli(cli_arguments("solo", tmp_path / "run", overrides, "--resume")) == 0
    assert [line["iteration"] for line in loss_lines(tmp_path / "run")] == [1, 2, 3, 4, 5]


def test_exploding_learning_rate_is_caught(prepared_root: Path, tmp_path: Path):
    overrides = tiny_overrides(prepared_root, solver__lr=1e30, solver__warmup_iters=0, solver__checkpoint_period=1)
    overrides += ["solver.clip_grad_norm=0", "solver.max_iters=6"]
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf).*Lower solver\.lr"):
        train(load_config(SYNTHETIC_EPS, overrides), tmp_path / "run", mode="eps")
    state = checkpoint(tmp_path / "run" / "last.pt")
    assert 1 <= state["iteration"] < 6
    assert all(math.isfinite(line["loss"]) for line in loss_lines(tmp_path / "run"))


def test_bf16_autocast_on_cpu_trains_with_finite_loss(prepared_root: Path, tmp_path: Path):
    """solver.amp=bf16 runs the forward pass in bf16 on the CPU: every convolution's output is bf16 (a global forward
    hook records them), while the weights stay fp32."""
    config = load_config(SYNTHETIC_EPS, tiny_overrides(prepared_root, solver__amp="bf16", solver__max_iters=2))
    conv_dtypes: list[torch.dtype] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(module, nn.Conv2d) and isinstance(output, torch.Tensor):
            conv_dtypes.append(output.dtype)

    seen: list[dict[str, float]] = []
    hook = nn.modules.module.register_module_forward_hook(record)
    try:
        summary = train(config, tmp_path / "run", mode="eps", on_step=lambda i, n, values: seen.append(values))
    finally:
        hook.remove()
    assert summary.iterations == 2 and len(seen) == 2
    assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}
    assert all(math.isfinite(values["loss"]) and values["loss"] > 0 for values in seen)
    assert set(seen[0]) >= LOSS_TERMS["eps"]
    weights = checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(tensor.dtype != torch.bfloat16 for tensor in weights.values())  # autocast leaves the weights in fp32


@pytest.mark.slow
def test_joint_model_overfits_two_images(prepared_root: Path, tmp_path: Path):
    """B0 joint model on two fixed 64×128 images (no augmentation): the total loss falls by ≥ 80 % in 120 steps and
    every term falls. The SOLOv2 head is the tiny one of the other tests: the light head (256 channels) takes ~1.5 s
    a step at this size on one core, too slow for a few hundred steps."""
    root = tmp_path / "cityscapes"
    shutil.copytree(prepared_root, root)
    images = sorted((root / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    for image in images[2:]:
        image.unlink()
    overrides = tiny_overrides(
        root,
        data__scale_min=0.5,
        data__scale_max=0.5,
        data__flip_prob=0.0,
        data__color_jitter=False,
        solver__max_iters=120,
        solver__checkpoint_period=1000,
        solver__warmup_iters=10,
        solver__schedule="step",
        solver__lr=0.002,
    )
    seen: list[dict[str, float]] = []
    train(load_config(SYNTHETIC_EPS, overrides), tmp_path / "run", mode="eps", on_step=lambda i, n, v: seen.append(v))
    assert len(seen) == 120

    def mean(key: str, values: list[dict[str, float]]) -> float:
        return sum(value[key] for value in values) / len(values)

    for key in ("loss", *LOSS_TERMS["eps"]):
        start, end = mean(key, seen[:5]), mean(key, seen[-10:])
        assert end <= (0.2 if key == "loss" else 0.8) * start, f"{key}: {start:.3f} → {end:.3f}"


def test_a_second_writer_is_refused_and_a_killed_writers_lock_taken_over(prepared_root: Path, tmp_path: Path):
    """Two trainings into one --out: the second is refused with the holder's pid (here: a process this test starts
    holds the lock), nothing of the folder changes; a lock left by a process that is gone is taken over."""
    run = tmp_path / "run"
    run.mkdir()
    lock = run / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock.write_text(f"{holder.pid} {socket.gethostname()}\n")
        config = load_config(SYNTHETIC_EPS, tiny_overrides(prepared_root, solver__max_iters=1))
        with pytest.raises(LpsctlError, match=rf"in use by process {holder.pid} on .*another --out"):
            train(config, run, mode="eps", overwrite=True)
        assert sorted(p.name for p in run.iterdir()) == ["run.lock"]
    finally:
        holder.kill()
        holder.wait()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{int(gone.stdout)} {socket.gethostname()}\n")
    with one_thread():
        summary = train(config, run, mode="eps")
    assert summary.iterations == 1 and not lock.exists()  # released when the run ends
