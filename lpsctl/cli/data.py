"""`lpsctl data synth | prepare | check`: datasets in Cityscapes format (the data modules load inside the commands)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from lpsctl.cli.options import ROOT, WORKERS, progress_bar

app = typer.Typer(help="Create, prepare and check datasets in Cityscapes format.", no_args_is_help=True)
console = Console()


@app.command("synth")
def synth(
    root: Path = ROOT,
    train: int = typer.Option(48, "--train", min=0, help="Number of train images."),
    val: int = typer.Option(16, "--val", min=0, help="Number of val images."),
    height: int = typer.Option(256, "--height", min=64, help="Image height in pixels."),
    width: int = typer.Option(512, "--width", min=64, help="Image width in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same dataset."),
    style: str = typer.Option(
        "street",
        "--style",
        help="What the scenes hold: street (all 19 classes, crowds, street furniture) or basic (road, sidewalk, "
        "building, vegetation, sky, cars and people: learnable from scratch in minutes, used by `lpsctl demo`).",
    ),
    workers: int = WORKERS,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing synthetic dataset."),
) -> None:
    """Write a synthetic street-scene dataset in Cityscapes format (images, polygons and label PNGs)."""
    from lpsctl.data import synthetic

    with progress_bar() as update:
        report = synthetic.synthesize(
            root,
            counts={"train": train, "val": val},
            height=height,
            width=width,
            seed=seed,
            style=style,
            workers=workers,
            overwrite=overwrite,
            progress=update,
        )
    console.print(f"[green]dataset:[/] {report}")
    console.print(f"next: lpsctl data prepare --root {shlex.quote(str(root))}")


@app.command("prepare")
def prepare(
    root: Path = ROOT,
    split: list[str] | None = typer.Option(None, "--split", help="Split(s) to prepare (default: all present)."),
    workers: int = WORKERS,
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that are already up to date."),
) -> None:
    """Create labelTrainIds PNGs, the panoptic JSON/PNGs and the COCO instance JSON with cityscapesscripts."""
    from lpsctl.data import prepare as prepare_module

    with progress_bar() as update:
        report = prepare_module.prepare(root, splits=split, workers=workers, overwrite=overwrite, progress=update)
    console.print(f"[green]prepared[/] {report}")


@app.command("check")
def check(
    root: Path = ROOT,
    split: list[str] | None = typer.Option(None, "--split", help="Split(s) to check (default: all present)."),
    quick: bool = typer.Option(False, "--quick", help="Read PNG headers only (no decoding: seconds, not minutes)."),
    workers: int = WORKERS,
) -> None:
    """Validate the layout, every file (decoded in full unless --quick) and the prepared files; exit code 1 when
    there are problems."""
    from lpsctl.data import check as check_module

    with progress_bar() as update:
        problems = check_module.check(root, splits=split, quick=quick, workers=workers, progress=update)
    for problem in problems:
        console.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        kinds = ", ".join(f"{count} {kind}" for kind, count in check_module.problem_kinds(problems).items())
        console.print(f"[red]{len(problems)} problem(s)[/] in {root}: {kinds}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {root} is a complete, prepared dataset")
