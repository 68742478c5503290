"""`lpsctl eval`: PQ/SQ/RQ (All, Things, Stuff, per class), mIoU and mask AP, printed as tables and saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lpsctl.cli.options import ROOT, WORKERS, progress_bar
from lpsctl.errors import LpsctlError

console = Console()


def eval_command(
    pred: Path | None = typer.Option(None, "--pred", help="Prediction folder from `lpsctl fuse`."),
    masks: Path | None = typer.Option(None, "--masks", help="Masks JSON from `lpsctl export-masks` (mask AP)."),
    root: Path = ROOT,
    split: str = typer.Option("val", "--split", help="Ground-truth split."),
    reference: bool = typer.Option(False, "--reference", help="Use cityscapesscripts' evaluatePanoptic for PQ."),
    workers: int = WORKERS,
) -> None:
    """Evaluate a prediction folder (PQ, mIoU) and/or exported masks (mask AP); writes DIR/metrics.json."""
    from lpsctl.atomic import write_text_atomic
    from lpsctl.engine.evaluate import run_evaluation

    if pred is None and masks is None:
        raise LpsctlError("nothing to evaluate: pass --pred DIR (from `lpsctl fuse`) and/or --masks FILE")
    with progress_bar() as update:
        metrics = run_evaluation(pred, masks, root, split, reference=reference, workers=workers, progress=update)
    metrics = {"split": split, **metrics}  # the file says what it measured
    if "All" in metrics:
        console.print(panoptic_table(metrics))
    if "miou" in metrics:
        console.print(f"mIoU {100 * metrics['miou']:.2f}")
    if "mask_ap" in metrics:
        console.print(mask_ap_table(metrics["mask_ap"]))
    target = (pred / "metrics.json") if pred is not None else masks.with_suffix(".metrics.json")  # type: ignore[union-attr]
    write_text_atomic(target, json.dumps(metrics, indent=2))
    console.print(f"[green]saved[/] {target}")


def panoptic_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="Panoptic quality (%)")
    for column in ("", "PQ", "SQ", "RQ", "#classes"):
        table.add_column(column, justify="right" if column else "left")
    for group in ("All", "Things", "Stuff"):
        row = metrics[group]
        table.add_row(group, *(f"{100 * row[k]:.2f}" for k in ("pq", "sq", "rq")), str(row["n"]), style="bold")
    table.add_section()
    absent = set(metrics.get("absent", []))
    for name, row in metrics.get("per_class", {}).items():
        if name not in absent:
            table.add_row(name, *(f"{100 * row[k]:.2f}" for k in ("pq", "sq", "rq")), "")
    if absent:
        table.caption = f"{len(absent)} classes with no GT/prediction hidden"
    return table


def mask_ap_table(result: dict[str, Any]) -> Table:
    table = Table(title="Mask AP (%)")
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*("–" if result[k] is None else f"{100 * result[k]:.2f}" for k in keys))
    return table
