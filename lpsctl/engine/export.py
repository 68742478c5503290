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

from lpsctl.atomic import write_text_atomic
from lpsctl.errors import DataError
from lpsctl.evaluation.coco import encode_results
from lpsctl.jsonfile import read_json
from lpsctl.labels import THING_LABEL_IDS
from lpsctl.structures import Instances, Prediction


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
            results += instances_to_results(
                prediction.image_id, prediction.instances, coco_ids.get(prediction.image_id)
            )
    write_text_atomic(out, json.dumps(results))
    return len(results)


def read_masks(path: Path) -> dict[str, Instances]:
    """Exported masks grouped by Cityscapes image id (`cs_image_id`), as binary Instances.

    Within an image, instances are sorted by descending score, ties by category and mask, so that the result (and
    the fusion made from it) never depends on the order of the file's entries. DataError for a file that is not a
    list of {cs_image_id, category_id (a Cityscapes thing label id), score, segmentation (RLE)}.
    """
    missing = f"masks file not found: {path} (write one with `lpsctl export-masks --out {path}`)"
    results = read_json(path, missing=missing)
    required = ("cs_image_id", "category_id", "score", "segmentation")
    if not isinstance(results, list) or any(
        not isinstance(r, dict) or any(k not in r for k in required) for r in results
    ):
        raise DataError(f"{path} is not an lpsctl masks file (a list of results with {', '.join(required)})")
    label_to_class = {label: index for index, label in enumerate(THING_LABEL_IDS)}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        if not isinstance(result["score"], (int, float)) or isinstance(result["score"], bool):
            raise DataError(f"{path}: score {result['score']!r} of {result['cs_image_id']} is not a number")
        if not isinstance(result["category_id"], int) or result["category_id"] not in label_to_class:
            raise DataError(f"{path}: category_id {result['category_id']} is not a Cityscapes thing label id")
        segmentation = result["segmentation"]
        if not isinstance(segmentation, dict) or not isinstance(segmentation.get("counts"), str):
            raise DataError(f"{path}: masks must be compressed RLE ({{size, counts}}), as `lpsctl export-masks` writes")
        grouped.setdefault(str(result["cs_image_id"]), []).append(result)
    return {image_id: _decode(entries, label_to_class, path) for image_id, entries in grouped.items()}


def _decode(entries: list[dict[str, Any]], label_to_class: dict[int, int], path: Path) -> Instances:
    entries = sorted(entries, key=lambda r: (-float(r["score"]), r["category_id"], r["segmentation"]["counts"]))
    sizes = {tuple(r["segmentation"]["size"]) for r in entries}
    if len(sizes) != 1:
        raise DataError(f"{path}: masks of {entries[0]['cs_image_id']} differ in size ({sorted(sizes)})")
    try:
        masks = mask_utils.decode([r["segmentation"] for r in entries])  # uint8[H, W, N]
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: cannot decode the masks of {entries[0]['cs_image_id']} ({error})") from None
    return Instances(
        masks=torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1))).bool(),
        scores=torch.tensor([float(r["score"]) for r in entries], dtype=torch.float32),
        classes=torch.tensor([label_to_class[r["category_id"]] for r in entries], dtype=torch.int64),
    )
