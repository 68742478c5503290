"""Validation during training, reusing the commands' own code: fused PQ (eps) or mask AP (solo) on the val split."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from lpsctl.config import Config
from lpsctl.data.cityscapes import coco_json, panoptic_folder, panoptic_json
from lpsctl.data.predictions import PANOPTIC_FOLDER, semantic_pairs
from lpsctl.engine.export import coco_image_ids, export_masks
from lpsctl.engine.fuse import fuse_predictions
from lpsctl.engine.inference import predict, split_dataset
from lpsctl.evaluation.coco import evaluate_masks
from lpsctl.evaluation.pq import evaluate_panoptic
from lpsctl.evaluation.semantic import evaluate_semantic
from lpsctl.models import PanopticNet
from lpsctl.structures import Prediction, ProgressCallback


def validate(model: PanopticNet, config: Config, device: torch.device, mode: str) -> dict[str, float]:
    """Headline numbers in percent: pq/sq/rq (+ _things/_stuff) for eps, ap/ap50/ap75 for solo."""
    root, split = Path(config.data.root), config.data.val_split
    predictions = predict(model, split_dataset(config, root, split), config, device)
    with tempfile.TemporaryDirectory(prefix="lpsctl-val-") as folder:
        if mode == "eps":
            return panoptic_summary(fuse_and_evaluate(predictions, config, root, split, Path(folder)))
        masks_path = Path(folder) / "masks.json"
        export_masks(predictions, masks_path, coco_image_ids(coco_json(root, split)))
        result = evaluate_masks(coco_json(root, split), masks_path)
        return {key.lower(): 100 * (result[key] or 0.0) for key in ("AP", "AP50", "AP75")}


def fuse_and_evaluate(
    predictions: Iterable[Prediction],
    config: Config,
    root: Path,
    split: str,
    out_dir: Path,
    *,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Fuse into the prediction folder `out_dir`, then PQ (`evaluate_panoptic`'s result) and mIoU (`miou`,
    `semantic`) against the split's ground truth."""
    pred_json = fuse_predictions(predictions, out_dir, config.fusion)
    gt_json, gt_folder = panoptic_json(root, split), panoptic_folder(root, split)
    result = evaluate_panoptic(
        gt_json, gt_folder, pred_json, out_dir / PANOPTIC_FOLDER, workers=workers, progress=progress
    )
    semantic = evaluate_semantic(semantic_pairs(root, split, out_dir), workers=workers, progress=progress)
    return result | {"miou": semantic["miou"], "semantic": semantic}


def panoptic_summary(result: dict) -> dict[str, float]:
    """pq, sq, rq (All) and pq_things, pq_stuff in percent from `evaluate_panoptic`'s result."""
    summary = {key: 100 * result["All"][key] for key in ("pq", "sq", "rq")}
    summary["pq_things"] = 100 * result["Things"]["pq"]
    summary["pq_stuff"] = 100 * result["Stuff"]["pq"]
    summary["miou"] = 100 * result["miou"]
    return summary
