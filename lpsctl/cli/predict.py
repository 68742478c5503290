"""`lpsctl export-masks` and `lpsctl fuse`: run a checkpoint over a split, write masks or panoptic files.

The engine (torch, albumentations) is imported inside the commands, so that `lpsctl --help` starts quickly.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from lpsctl.cli.options import COMPILE, PRECISION, ROOT, SET, inference_overrides, progress_bar
from lpsctl.errors import LpsctlError

if TYPE_CHECKING:
    import torch

console = Console()
CHECKPOINT = typer.Option(..., "--checkpoint", help="A checkpoint written by `lpsctl train` (last.pt or best.pt).")
SPLIT = typer.Option("val", "--split", help="Split to run on.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available).")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing result.")


def _q(value: object) -> str:
    """`value` quoted for a shell, so a printed next step runs as printed (paths with spaces)."""
    return shlex.quote(str(value))


def resolve_device(name: str | None) -> torch.device:
    """The torch device for `--device` (None: cuda when available); a clear error for a name torch does not know
    or a CUDA device this machine lacks."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LpsctlError(f"--device {name}: not a device name (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LpsctlError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LpsctlError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise LpsctlError(f"--device {name}: only cpu and cuda devices are supported")
    return device


def export_masks_command(
    checkpoint: Path = CHECKPOINT,
    root: Path = ROOT,
    split: str = SPLIT,
    out: Path = typer.Option(Path("masks.json"), "--out", "-o", help="COCO results JSON to write."),
    device: str | None = DEVICE,
    overwrite: bool = OVERWRITE,
    overrides: list[str] | None = SET,
    precision: str | None = PRECISION,
    compile_: bool = COMPILE,
) -> None:
    """Run the instance head over a split; write its instances as COCO results (RLE, keyed by image id).
    `--set` takes decoding thresholds, e.g. maskrcnn.score_threshold=0.05 for mask AP."""
    from lpsctl.data.cityscapes import coco_json
    from lpsctl.engine.export import coco_image_ids, export_masks
    from lpsctl.engine.inference import load_model, predict, split_dataset

    if out.is_dir():
        raise LpsctlError(f"--out {out} is a folder: give a file name such as {out / 'masks.json'}")
    if out.exists() and not overwrite:
        raise LpsctlError(f"{out} exists: pass --overwrite or another --out")
    target = resolve_device(device)
    overrides = inference_overrides(overrides, precision, compile_)
    model, config = load_model(checkpoint, target, need="instance", overrides=overrides)
    dataset = split_dataset(config, root, split)
    coco_ids = coco_image_ids(coco_json(root, split))
    with progress_bar() as update:
        count = export_masks(predict(model, dataset, config, target, progress=update), out, coco_ids)
    console.print(f"[green]wrote[/] {count} instances of {len(dataset)} images to {out}")
    console.print(f"mask AP: lpsctl eval --masks {_q(out)} --root {_q(root)} --split {_q(split)}")


def fuse_command(
    checkpoint: Path = CHECKPOINT,
    root: Path = ROOT,
    split: str = SPLIT,
    masks: Path | None = typer.Option(None, "--masks", help="Masks from `export-masks` instead of the model's own."),
    out: Path = typer.Option(..., "--out", "-o", help="Prediction folder: panoptic.json, panoptic/, semantic/."),
    overrides: list[str] | None = SET,
    precision: str | None = PRECISION,
    compile_: bool = COMPILE,
    device: str | None = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """EfficientPS panoptic fusion of semantic logits and instance masks; writes Cityscapes panoptic PNGs + JSON."""
    from lpsctl.engine.export import read_masks
    from lpsctl.engine.fuse import check_masks_cover, check_output, fuse_predictions, prepare_output
    from lpsctl.engine.inference import load_model, predict, split_dataset

    check_output(out, overwrite=overwrite)  # before the slow part: refuse to overwrite at once
    target = resolve_device(device)
    # fusion thresholds and inference settings may be set at fuse time; the network is the checkpoint's
    overrides = inference_overrides(overrides, precision, compile_)
    model, config = load_model(checkpoint, target, need="semantic", overrides=overrides)
    dataset = split_dataset(config, root, split)
    exported = None
    if masks is not None:
        exported = read_masks(masks)
        check_masks_cover(exported, dataset.image_ids, masks)
    elif model.instance_head is None:
        raise LpsctlError(f"{checkpoint} has no instance head: pass --masks from `lpsctl export-masks`")
    prepare_output(out, overwrite=overwrite)
    with progress_bar() as update:
        predictions = predict(model, dataset, config, target, progress=update)
        json_path = fuse_predictions(predictions, out, config.fusion, masks=exported)
    console.print(f"[green]wrote[/] {len(dataset)} panoptic images to {out} ({json_path.name})")
    console.print(f"evaluate: lpsctl eval --pred {_q(out)} --root {_q(root)} --split {_q(split)}")
