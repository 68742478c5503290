"""`lpsctl predict` (a trained model on your own images, folders, globs and videos) and `lpsctl export` (ONNX or
TorchScript). The engine is imported inside the commands, so that `lpsctl --help` starts quickly."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from lpsctl.cli.options import COMPILE, PRECISION, SET, inference_overrides, progress_bar
from lpsctl.cli.predict import DEVICE, resolve_device
from lpsctl.errors import LpsctlError

console = Console()
FORMATS = ("onnx", "torchscript")


def predict_command(
    sources: list[str] = typer.Argument(..., help="Image files (PNG/JPEG), folders, glob patterns or video files."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A `train eps` checkpoint (last.pt/best.pt)."),
    model: Path | None = typer.Option(None, "--model", help="An exported network (`lpsctl export`): .onnx or .pt."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: panoptic/, panoptic.json, overlays/."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write overlays (and an overlaid video per video)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Frames run through the network at once."),
    every: int = typer.Option(1, "--every", min=1, help="Predict every N-th frame of a video."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Predict again frames whose result exists."),
    overrides: list[str] | None = SET,
    precision: str | None = PRECISION,
    compile_: bool = COMPILE,
    device: str | None = DEVICE,
) -> None:
    """Panoptic segmentation of your own images and videos, in COCO panoptic format (resumable: frames whose
    result exists are kept unless --overwrite)."""
    from lpsctl.data.sources import expand_sources
    from lpsctl.engine.deploy import ExportedNetwork, Network, TorchNetwork
    from lpsctl.engine.inference import load_model, runtime_overrides
    from lpsctl.engine.predict import predict_sources
    from lpsctl.models import instance_geometry
    from lpsctl.postprocess.postprocessor import build_postprocessor

    if (checkpoint is None) == (model is None):
        raise LpsctlError("give the network with either --checkpoint (a train eps checkpoint) or --model (an export)")
    overrides = inference_overrides(overrides, precision, compile_)
    network_keys = ("inference.precision", "inference.compile", "inference.channels_last", "inference.fold_norms")
    if model is not None and any(item.partition("=")[0].strip() in network_keys for item in overrides):
        raise LpsctlError(
            "--precision, --compile and --set inference.* run a checkpoint's network; an export runs as it was "
            "exported (its fusion.* and decoding thresholds can still be set)"
        )
    if out.exists() and not out.is_dir():
        raise LpsctlError(f"--out {out} is a file: give a folder for the predictions")
    found = expand_sources(sources)
    target = resolve_device(device)
    runner: Network
    if checkpoint is not None:
        network, config = load_model(checkpoint, target, need="semantic", overrides=overrides)
        runner, input_size, geometry = TorchNetwork(network, config, target), None, network.instance_geometry
    else:
        assert model is not None
        exported = ExportedNetwork(model, target)
        if not exported.semantic:
            raise LpsctlError(f"{model} has no semantic head: predict needs an export of a `train eps` model")
        config = runtime_overrides(exported.config, overrides)
        runner, input_size, geometry = exported, exported.input_size, instance_geometry(exported.config)
    postprocessor = build_postprocessor(config, instance_geometry=geometry)
    with progress_bar(status=True) as update:
        summary = predict_sources(
            found, runner, postprocessor, config, out, batch_size=batch, every=every, overlay=overlay,
            overwrite=overwrite, input_size=input_size, progress=update,
        )  # fmt: skip
    for problem in summary.failed:
        console.print(f"[yellow]skipped[/] {problem}", highlight=False, soft_wrap=True)
    kept = f", {summary.skipped} kept from an earlier run" if summary.skipped else ""
    console.print(f"[green]predicted[/] {summary.written} images/frames{kept}, {len(summary.failed)} unreadable")
    console.print(f"panoptic: {summary.json_path} and {out / 'panoptic'}")
    for video in summary.videos:
        console.print(f"video: {video}")
    if overlay:
        console.print(f"overlays: {out / 'overlays'}")


def export_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint written by `lpsctl train`."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (run with onnxruntime) or torchscript."),
    height: int | None = typer.Option(None, "--height", help="Input height (default: the training crop's)."),
    width: int | None = typer.Option(None, "--width", help="Input width (default: the training crop's)."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write, e.g. model.onnx or model.pt."),
    fold: bool = typer.Option(True, "--fold/--no-fold", help="Fold batch norms into the convolutions."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Export the network's forward pass (backbone, FPN, heads → raw outputs) with a dynamic batch; decoding and
    fusion stay in `lpsctl predict --model`."""
    import torch

    from lpsctl.engine.deploy import export_network
    from lpsctl.engine.inference import load_model

    if fmt not in FORMATS:
        raise LpsctlError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise LpsctlError(f"--out {out} is a folder: give a file name such as {out / ('model.' + _suffix(fmt))}")
    if out.exists() and not overwrite:
        raise LpsctlError(f"{out} exists: pass --overwrite or another --out")
    model, config = load_model(checkpoint, torch.device("cpu"), overrides=["inference.fold_norms=false"])
    height = height or _multiple_of_32(config.data.crop_height * config.data.eval_scale)
    width = width or _multiple_of_32(config.data.crop_width * config.data.eval_scale)
    meta = export_network(model, config, out, fmt=fmt, height=height, width=width, fold=fold)  # type: ignore[arg-type]
    console.print(f"[green]exported[/] {out} ({fmt}, input {width}×{height}, {meta['folded_norms']} norms folded)")
    console.print(f"run it: lpsctl predict IMAGES… --model {shlex.quote(str(out))} --out predictions")


def _multiple_of_32(value: float) -> int:
    return max(32, -(-round(value) // 32) * 32)


def _suffix(fmt: str) -> str:
    return "onnx" if fmt == "onnx" else "pt"
