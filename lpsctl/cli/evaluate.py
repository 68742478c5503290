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

    if pred is None and masks is None:
        raise LpsctlError("nothing to evaluate: pass --pred DIR (from `lpsctl fuse`) and/or --masks FILE")
    metrics = run_evaluation(pred, masks, root, split, reference=reference, workers=workers)
    if "All" in metrics:
        console.print(panoptic_table(metrics))
    if "miou" in metrics:
        console.print(f"mIoU {100 * metrics['miou']:.2f}")
    if "mask_ap" in metrics:
        console.print(mask_ap_table(metrics["mask_ap"]))
    target = (pred / "metrics.json") if pred is not None else masks.with_suffix(".metrics.json")  # type: ignore[union-attr]
    write_text_atomic(target, json.dumps(metrics, indent=2))
    console.print(f"[green]saved[/] {target}")


def run_evaluation(
    pred: Path | None, masks: Path | None, root: Path, split: str, *, reference: bool, workers: int
) -> dict[str, Any]:
    """{"All", "Things", "Stuff", "per_class"} (PQ; fractions), "miou" and "semantic" (when the folder has semantic
    PNGs) for `pred`; "mask_ap" for `masks`."""
    from lpsctl.data.cityscapes import coco_json, panoptic_folder, panoptic_json
    from lpsctl.evaluation.coco import evaluate_masks
    from lpsctl.evaluation.pq import evaluate_panoptic
    from lpsctl.evaluation.reference import evaluate_panoptic_reference
    from lpsctl.evaluation.semantic import evaluate_semantic
    from lpsctl.postprocess.panoptic_io import PANOPTIC_FOLDER, PANOPTIC_JSON, SEMANTIC_FOLDER

    if not root.is_dir():
        raise LpsctlError(f"dataset root not found: {root} (point --root at the dataset the prediction was made on)")
    metrics: dict[str, Any] = {}
    if pred is not None:
        if not (pred / PANOPTIC_JSON).is_file() or not (pred / PANOPTIC_FOLDER).is_dir():
            raise LpsctlError(
                f"{pred} is not a prediction folder (needs {PANOPTIC_JSON} and {PANOPTIC_FOLDER}/): "
                f"run `lpsctl fuse --out {pred}`"
            )
        gt_json, gt_folder = panoptic_json(root, split), panoptic_folder(root, split)
        if not gt_json.is_file():
            raise LpsctlError(f"ground truth {gt_json} missing: run `lpsctl data prepare --root {root}`")
        with progress_bar() as update:
            if reference:
                result = evaluate_panoptic_reference(gt_json, gt_folder, pred / PANOPTIC_JSON, pred / PANOPTIC_FOLDER)
            else:
                result = evaluate_panoptic(
                    gt_json, gt_folder, pred / PANOPTIC_JSON, pred / PANOPTIC_FOLDER, workers=workers, progress=update
                )
            metrics.update(result)
            if (pred / SEMANTIC_FOLDER).is_dir():
                semantic = evaluate_semantic(root, split, pred, workers=workers, progress=update)
                metrics["miou"] = semantic["miou"]
                metrics["semantic"] = semantic
    if masks is not None:
        metrics["mask_ap"] = evaluate_masks(coco_json(root, split), masks)
    return metrics


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
