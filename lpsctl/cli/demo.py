"""`lpsctl demo`: synthetic data → prepare → train the joint model → fuse → PQ → overlays, in one command."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from lpsctl.cli.options import SET, WORKERS, progress_bar

console = Console()


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Demo folder (reused by a second run)."),
    train_images: int = typer.Option(300, "--train-images", min=1, help="Synthetic train images."),
    val_images: int = typer.Option(30, "--val-images", min=1, help="Synthetic val images."),
    height: int = typer.Option(128, "--height", min=64, help="Synthetic image height."),
    width: int = typer.Option(256, "--width", min=64, help="Synthetic image width."),
    overrides: list[str] | None = SET,
    workers: int = WORKERS,
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again: new data, training and evaluation."),
) -> None:
    """Run the whole pipeline on built-in synthetic data and print where everything is."""
    from lpsctl.cli.evaluate import panoptic_table
    from lpsctl.engine.demo import DemoSizes, run_demo

    sizes = DemoSizes(train_images=train_images, val_images=val_images, height=height, width=width)
    start = time.monotonic()
    with progress_bar() as update:

        def on_step(iteration: int, total: int, values: dict[str, float]) -> None:
            update("train eps", iteration, total)

        summary = run_demo(
            out,
            sizes=sizes,
            overrides=tuple(overrides or ()),
            workers=workers,
            overwrite=overwrite,
            progress=update,
            on_step=on_step,
        )
    console.print(panoptic_table(summary.metrics))
    console.print(f"mIoU {100 * summary.metrics['miou']:.2f}")
    if summary.reused:
        console.print(f"reused from an earlier demo: {', '.join(summary.reused)}")
    console.print(f"dataset      {summary.dataset}")
    console.print(f"checkpoint   {summary.checkpoint}")
    console.print(f"predictions  {summary.predictions} (Cityscapes panoptic format)")
    console.print(f"metrics      {summary.out / 'metrics.json'}")
    console.print(f"overlays     {summary.out / 'overlays'} ({len(summary.overlays)} images)")
    minutes, seconds = divmod(round(time.monotonic() - start), 60)
    console.print(f"demo finished in {minutes} min {seconds:02d} s")
