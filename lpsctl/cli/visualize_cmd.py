"""`lpsctl visualize`: overlays of panoptic results — from a model run on images, or from existing predictions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from lpsctl.cli.options import COMPILE, PRECISION, SET, inference_overrides, progress_bar
from lpsctl.cli.predict import DEVICE, resolve_device
from lpsctl.errors import LpsctlError

console = Console()


def visualize_command(
    inputs: list[str] = typer.Argument(..., help="Images, folders or globs (run the model), or a prediction folder."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A `train eps` checkpoint to run on images."),
    out: Path = typer.Option(Path("overlays"), "--out", "-o", help="Folder for the overlay PNGs."),
    images: Path | None = typer.Option(None, "--images", help="With a prediction folder: where the input images are."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Put the input image left of the overlay."),
    overrides: list[str] | None = SET,
    precision: str | None = PRECISION,
    compile_: bool = COMPILE,
    device: str | None = DEVICE,
) -> None:
    """Draw stuff in the Cityscapes palette and every instance in its own colour with contour, label and legend.

    An image larger than the model's data.eval_max_size (default 2048) is run at that size and its result drawn at
    the image's own size; `--set fusion.*|inference.*|data.eval_scale|data.eval_max_size=…` changes how it runs."""
    from lpsctl.data.dataset import expand_image_paths
    from lpsctl.engine.visualize import overlay_predictions, render_prediction_folder

    if len(inputs) == 1 and (Path(inputs[0]) / "panoptic.json").is_file():
        if checkpoint is not None or overrides or precision is not None or compile_:
            raise LpsctlError(
                f"{inputs[0]} is a prediction folder, drawn as it is: --checkpoint, --set, --precision and --compile "
                "run a model on images"
            )
        written = render_prediction_folder(Path(inputs[0]), out, images=images, side_by_side=side_by_side)
    else:
        paths = expand_image_paths(inputs)
        if checkpoint is None:
            raise LpsctlError("images need a model: pass --checkpoint (or give a prediction folder from `lpsctl fuse`)")
        with progress_bar() as update:
            written = overlay_predictions(
                paths, checkpoint, out, resolve_device(device), side_by_side, update,
                overrides=inference_overrides(overrides, precision, compile_),
            )  # fmt: skip
    console.print(f"[green]wrote[/] {len(written)} overlay(s) to {out}")
