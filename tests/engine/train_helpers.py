"""Shared settings for the training-engine tests: a tiny joint model on 64×128 crops, one CPU thread per process."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).parents[2]
SYNTHETIC_EPS = REPO / "configs" / "synthetic_eps.yaml"
CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config"}


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine more threads make these tiny steps up to ten times slower.
    Also restores the process-wide deterministic-algorithms flag that `solver.deterministic` sets."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def tiny_overrides(root: Path, *, tiny_head: bool = True, **extra: Any) -> list[str]:
    """`section.key=value` overrides (`section__key=value` in `extra`) for a run that takes well under a second per
    step on one core; `tiny_head=False` keeps the configuration's light SOLOv2 head (2 convs of 256, D = 128)."""
    values: dict[str, Any] = {
        "data.root": str(root),
        "data.crop_height": 64,
        "data.crop_width": 128,
        "data.batch_size": 2,
        "data.num_workers": 0,
        "solver.max_iters": 3,
        "solver.checkpoint_period": 2,
        "solver.eval_period": 0,
        "solver.log_period": 1,
        "model.norm": "torch",
    }
    if tiny_head:
        values |= {"solo.stacked_convs": 1, "solo.head_channels": 32, "solo.kernel_dim": 32}
        values["solo.mask_feature_channels"] = 32
    values.update({key.replace("__", "."): value for key, value in extra.items()})
    return [
        f"{key}={'true' if value is True else 'false' if value is False else value}" for key, value in values.items()
    ]


def cli_arguments(mode: str, out: Path, overrides: list[str], *flags: str) -> list[str]:
    """`train <mode> --out OUT --config synthetic_eps.yaml -s …` (without the program name)."""
    arguments = ["train", mode, "--out", str(out), "--config", str(SYNTHETIC_EPS), *flags]
    for item in overrides:
        arguments += ["-s", item]
    return arguments


def metrics_lines(run: Path) -> list[dict[str, Any]]:
    """Every line of metrics.jsonl, parsed (fails on a line that is not JSON)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def loss_lines(run: Path) -> list[dict[str, Any]]:
    return [line for line in metrics_lines(run) if "loss" in line]


def checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint read with `torch.load(weights_only=True)` (no code runs), with all its parts."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) >= CHECKPOINT_KEYS, f"{path} lacks {CHECKPOINT_KEYS - set(state)}"
    return state


def assert_same_tensors(expected: Any, actual: Any, where: str = "") -> None:
    """Bitwise equality of nested dicts/lists of tensors and plain values."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(expected, actual), f"{where} differs"
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys(), f"{where}: keys differ"
        for key in expected:
            assert_same_tensors(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(expected) == len(actual), f"{where}: lengths differ"
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            assert_same_tensors(left, right, f"{where}[{index}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


def subprocess_environment() -> dict[str, str]:
    """One thread per process (2 cores, other tests running) and the checkout importable."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    return environment


PYTHON = sys.executable
