"""`lpsctl eval`'s work: PQ (lpsctl's evaluator or cityscapesscripts'), mIoU and mask AP of a prediction folder and/or
an exported masks file against a prepared split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpsctl.data.cityscapes import coco_json, panoptic_folder, panoptic_json, require_root
from lpsctl.data.predictions import PANOPTIC_FOLDER, PANOPTIC_JSON, SEMANTIC_FOLDER, semantic_pairs
from lpsctl.errors import DataError
from lpsctl.evaluation.coco import evaluate_masks
from lpsctl.evaluation.pq import evaluate_panoptic
from lpsctl.evaluation.reference import evaluate_panoptic_reference
from lpsctl.evaluation.semantic import evaluate_semantic
from lpsctl.structures import ProgressCallback


def run_evaluation(
    pred: Path | None,
    masks: Path | None,
    root: Path,
    split: str,
    *,
    reference: bool,
    workers: int,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """{"All", "Things", "Stuff", "per_class"} (PQ; fractions), "miou" and "semantic" (when the folder has semantic
    PNGs) for `pred`; "mask_ap" for `masks`."""
    require_root(root)
    metrics: dict[str, Any] = {}
    if pred is not None:
        metrics |= _evaluate_folder(pred, root, split, reference=reference, workers=workers, progress=progress)
    if masks is not None:
        metrics["mask_ap"] = evaluate_masks(coco_json(root, split), masks)
    return metrics


def _evaluate_folder(
    pred: Path, root: Path, split: str, *, reference: bool, workers: int, progress: ProgressCallback | None
) -> dict[str, Any]:
    if not (pred / PANOPTIC_JSON).is_file() or not (pred / PANOPTIC_FOLDER).is_dir():
        raise DataError(
            f"{pred} is not a prediction folder (needs {PANOPTIC_JSON} and {PANOPTIC_FOLDER}/): "
            f"run `lpsctl fuse --out {pred}`"
        )
    gt_json, gt_folder = panoptic_json(root, split), panoptic_folder(root, split)
    if not gt_json.is_file():
        raise DataError(f"ground truth {gt_json} missing: run `lpsctl data prepare --root {root}`")
    # lpsctl's evaluator reads every file first, also before the reference: a bad prediction (missing, unreadable,
    # of another size, with ids its JSON lacks) is one DataError, not a traceback from the reference's workers
    metrics = evaluate_panoptic(
        gt_json, gt_folder, pred / PANOPTIC_JSON, pred / PANOPTIC_FOLDER, workers=workers, progress=progress
    )
    if reference:
        metrics = evaluate_panoptic_reference(gt_json, gt_folder, pred / PANOPTIC_JSON, pred / PANOPTIC_FOLDER)
    if (pred / SEMANTIC_FOLDER).is_dir():
        semantic = evaluate_semantic(semantic_pairs(root, split, pred), workers=workers, progress=progress)
        metrics |= {"miou": semantic["miou"], "semantic": semantic}
    return metrics
