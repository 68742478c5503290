"""`lpsctl export-masks` and `lpsctl fuse`: run a checkpoint over a split, write masks or panoptic files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import typer
from rich.console import Console

from lpsctl.cli.options import ROOT, SET, progress_bar
from lpsctl.config import apply_override
from lpsctl.data.cityscapes import coco_json
from lpsctl.engine.export import coco_image_ids, export_masks, read_masks
from lpsctl.engine.fuse import check_masks_cover, fuse_predictions, prepare_output
from lpsctl.engine.inference import load_model, predict, split_dataset
from lpsctl.errors import LpsctlError

console = Console()
CHECKPOINT = typer.Option(..., "--checkpoint", help="A checkpoint written by `lpsctl train` (last.pt or best.pt).")
SPLIT = typer.Option("val", "--split", help="Split to run on.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available).")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing result.")


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LpsctlError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def export_masks_command(
    checkpoint: Path = CHECKPOINT,
    root: Path = ROOT,
    split: str = SPLIT,
    out: Path = typer.Option(Path("masks.json"), "--out", "-o", help="COCO results JSON to write."),
    device: str | None = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """Run the SOLOv2 head over a split; write its instances as COCO results (RLE, keyed by image id)."""
    if out.exists() and not overwrite:
        raise LpsctlError(f"{out} exists: pass --overwrite or another --out")
    target = resolve_device(device)
    model, config = load_model(checkpoint, target, need="instance")
    dataset = split_dataset(config, root, split)
    with progress_bar() as update:
        count = export_masks(predict(model, dataset, config, target, progress=update), out, coco_image_ids(coco_json(root, split)))
    console.print(f"[green]wrote[/] {count} instances of {len(dataset)} images to {out}")
    console.print(f"mask AP: lpsctl eval --masks {out} --root {root} --split {split}")


def fuse_command(
    checkpoint: Path = CHECKPOINT,
    root: Path = ROOT,
    split: str = SPLIT,
    masks: Path | None = typer.Option(None, "--masks", help="Masks from `export-masks` instead of the model's own."),
    out: Path = typer.Option(..., "--out", "-o", help="Prediction folder: panoptic.json, panoptic/, semantic/."),
    overrides: list[str] | None = SET,
    device: str | None = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """EfficientPS panoptic fusion of semantic logits and SOLOv2 masks; writes Cityscapes panoptic PNGs + JSON."""
    target = resolve_device(device)
    model, config = load_model(checkpoint, target, need="semantic")
    for item in overrides or []:  # fusion thresholds may be tuned at fuse time; the network is the checkpoint's
        if not item.startswith("fusion."):
            raise LpsctlError(f"--set {item}: fuse only takes fusion.* overrides (the model comes from the checkpoint)")
        config = apply_override(config, item)
    dataset = split_dataset(config, root, split)
    exported = read_masks(masks) if masks is not None else None
    if exported is not None and masks is not None:
        check_masks_cover(exported, dataset.image_ids, masks)
    if exported is None and model.instance_head is None:
        raise LpsctlError(f"{checkpoint} has no SOLOv2 head: pass --masks from `lpsctl export-masks`")
    prepare_output(out, overwrite=overwrite)
    with progress_bar() as update:
        predictions = predict(model, dataset, replace(config), target, progress=update)
        json_path = fuse_predictions(predictions, out, config.fusion, masks=exported)
    console.print(f"[green]wrote[/] {len(dataset)} panoptic images to {out} ({json_path.name})")
    console.print(f"evaluate: lpsctl eval --pred {out} --root {root} --split {split}")
