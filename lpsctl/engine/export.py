"""`export-masks`: SOLOv2 instances as a COCO results JSON keyed by image id (RLE at the original resolution), and
reading such a file back for `fuse --masks`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from lpsctl.data.cityscapes import THING_LABEL_IDS
from lpsctl.atomic import write_text_atomic
from lpsctl.errors import DataError
from lpsctl.evaluation.coco import encode_results
from lpsctl.models import Prediction
from lpsctl.structures import Instances


def coco_image_ids(coco_json: Path | None) -> dict[str, int]:
    """Cityscapes image id → COCO image id of the prepared annotations (empty when there are none, e.g. test)."""
    if coco_json is None or not coco_json.is_file():
        return {}
    images = json.loads(coco_json.read_text())["images"]
    return {image["cs_image_id"]: int(image["id"]) for image in images}


def instances_to_results(image_id: str, instances: Instances, coco_id: int | None) -> list[dict[str, Any]]:
    """One COCO result per instance: image_id (the COCO int id when known, so plain COCOeval reads the file),
    cs_image_id (the Cityscapes id, which pairing uses), category_id (Cityscapes label id), score, RLE segmentation."""
    results = encode_results(
        coco_id if coco_id is not None else image_id,
        instances.masks.cpu().numpy(),
        instances.scores.tolist(),
        [THING_LABEL_IDS[c] for c in instances.classes.tolist()],
    )
    return [{**result, "cs_image_id": image_id} for result in results]


def export_masks(predictions: Iterable[Prediction], out: Path, coco_ids: dict[str, int]) -> int:
    """Write every prediction's instances to `out` (atomically); returns the number of instances."""
    results: list[dict[str, Any]] = []
    for prediction in predictions:
        if prediction.instances is not None:
            results += instances_to_results(prediction.image_id, prediction.instances, coco_ids.get(prediction.image_id))
    write_text_atomic(out, json.dumps(results))
    return len(results)


def read_masks(path: Path) -> dict[str, Instances]:
    """Exported masks grouped by Cityscapes image id, sorted by descending score, as binary Instances."""
    if not path.is_file():
        raise DataError(f"masks file not found: {path} (write one with `lpsctl export-masks --out {path}`)")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: not valid JSON ({error})") from None
    if not isinstance(results, list) or any("cs_image_id" not in r or "segmentation" not in r for r in results):
        raise DataError(f"{path} is not an lpsctl masks file (a list of results with cs_image_id and segmentation)")
    label_to_class = {label: index for index, label in enumerate(THING_LABEL_IDS)}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        if result["category_id"] not in label_to_class:
            raise DataError(f"{path}: category_id {result['category_id']} is not a Cityscapes thing label id")
        grouped.setdefault(result["cs_image_id"], []).append(result)
    return {image_id: _decode(entries, label_to_class) for image_id, entries in grouped.items()}


def _decode(entries: list[dict[str, Any]], label_to_class: dict[int, int]) -> Instances:
    entries = sorted(entries, key=lambda r: -r["score"])
    masks = mask_utils.decode([r["segmentation"] for r in entries])  # uint8[H, W, N]
    return Instances(
        masks=torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1))).bool(),
        scores=torch.tensor([r["score"] for r in entries], dtype=torch.float32),
        classes=torch.tensor([label_to_class[r["category_id"]] for r in entries], dtype=torch.int64),
    )
