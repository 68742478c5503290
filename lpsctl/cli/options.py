"""Options shared by several commands, and the rich progress callback handed to library functions.

Only light imports here and at the top of every command module: `lpsctl --help` must not pay for torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lpsctl.config import Config, load_config

if TYPE_CHECKING:
    from lpsctl.structures import ProgressCallback

ROOT = typer.Option(Path("data/cityscapes"), "--root", help="Dataset root in Cityscapes layout.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML config listing deviations from the defaults.")
SET = typer.Option(None, "--set", "-s", help="Override one config value: section.key=value (repeatable).")
WORKERS = typer.Option(2, "--workers", "-j", min=1, help="Parallel worker processes.")


def resolve_config(config: Path | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


@contextmanager
def progress_bar() -> Iterator[ProgressCallback]:
    """Yields `update(description, done, total)`; one bar per description."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def update(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done, total=total)

        yield update
