"""Options shared by several commands, and the rich progress callback handed to library functions.

Only light imports here and at the top of every command module: `lpsctl --help` must not pay for torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from lpsctl.config import Config, load_config

#: `update(description, done, total, status="")`: a ProgressCallback (lpsctl.structures) with an optional status text
ProgressUpdate = Callable[..., None]

ROOT = typer.Option(Path("data/cityscapes"), "--root", help="Dataset root in Cityscapes layout.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML config listing deviations from the defaults.")
SET = typer.Option(None, "--set", "-s", help="Override one config value: section.key=value (repeatable).")
WORKERS = typer.Option(2, "--workers", "-j", min=1, help="Parallel worker processes.")
PRECISION = typer.Option(
    None,
    "--precision",
    help="Autocast of the network (= --set inference.precision): off (fp32); fp16 (CUDA; fp32 on a CPU); bf16 (CUDA, "
    "and CPUs with avx512_bf16 or AMX: ~1.9x the fp32 default there, outputs within bf16 rounding).",
)
COMPILE = typer.Option(
    False,
    "--compile",
    help="torch.compile the network (= --set inference.compile=true): minutes to compile each input size, then "
    "faster (B5 at 1024x2048 on a CPU: ~1.2x); pays off over many images of one size.",
)


def inference_overrides(overrides: list[str] | None, precision: str | None, compile_: bool) -> list[str]:
    """The --set values with --precision and --compile appended as the inference.* values they stand for."""
    values = list(overrides or [])
    if precision is not None:
        values.append(f"inference.precision={precision}")
    if compile_:
        values.append("inference.compile=true")
    return values


def resolve_config(config: Path | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


@contextmanager
def progress_bar(*, status: bool = False, disable: bool = False) -> Iterator[ProgressUpdate]:
    """Yields `update(description, done, total[, status])`: one rich bar per description (the one progress display
    of every command; `status` adds a text column the caller fills, e.g. the training losses)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False, disable=disable) as progress:
        tasks: dict[str, TaskID] = {}

        def update(description: str, done: int, total: int, text: str = "") -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total, status=text)
            progress.update(tasks[description], completed=done, total=total, status=text)

        yield update
