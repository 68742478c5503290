"""Instance mask AP with COCOeval (segm) on the Cityscapes COCO-format instance JSON (SPEC §2): pycocotools', or
hotcoco's drop-in port where it is installed (the same numbers).

Results may name images by COCO id, by Cityscapes image id (the GT JSON's `cs_image_id` field) or by file name.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lpsctl.errors import DataError
from lpsctl.jsonfile import read_json

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IMAGE_SUFFIX = "_leftImg8bit.png"


def encode_results(
    image_id: str | int, masks: np.ndarray, scores: Sequence[float], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO segm results of one image: masks bool[N, H, W], scores [N], category ids [N] (Cityscapes label ids as in
    the GT JSON's categories). RLE counts are decoded to str so the list can be written as JSON."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or not (len(masks) == len(scores) == len(category_ids)):
        raise DataError(f"results of {image_id}: expected masks [N, H, W] with N scores and categories")
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [
        {
            "image_id": image_id,
            "category_id": int(category),
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "score": float(score),
        }
        for rle, score, category in zip(encoded, scores, category_ids, strict=True)
    ]


def coco_classes(backend: str = "auto") -> tuple[Any, Any]:
    """(COCO, COCOeval) of the evaluator `backend` names: "pycocotools", "hotcoco" (its pycocotools-compatible Rust
    port: the same precision arrays and numbers, 10-20× faster here; `benchmarks/mask_ap.py`), or "auto" (hotcoco
    where installed)."""
    if backend in ("auto", "hotcoco"):
        try:
            import hotcoco

            return hotcoco.COCO, hotcoco.COCOeval
        except ImportError:
            if backend == "hotcoco":
                raise DataError("mask AP backend 'hotcoco' asked for but not installed: pip install hotcoco") from None
    return COCO, COCOeval


def evaluate_masks(
    gt_json: str | Path, results: str | Path | list[dict[str, Any]], *, backend: str = "auto"
) -> dict[str, Any]:
    """Mask AP of `results` (a list of {image_id, category_id, segmentation (RLE), score} or a JSON file of one).

    Returns fractions in [0, 1]: AP (IoU .50:.95), AP50, AP75, APs/APm/APl (None where COCOeval has no GT of that size)
    and per_class {category name: AP or None when the class has no GT}. No results at all give AP 0. `backend`: see
    `coco_classes`.
    """
    gt_json = Path(gt_json)
    if not gt_json.is_file():
        raise DataError(f"COCO instance JSON not found: {gt_json} (run `lpsctl data prepare`)")
    coco, coco_eval = coco_classes(backend)
    with contextlib.redirect_stdout(io.StringIO()) as output:
        gt = coco(str(gt_json))
    detections = _map_image_ids(_load_results(results), gt, gt_json)
    names = {category["id"]: category["name"] for category in gt.dataset.get("categories", [])}
    if not detections:
        logger.warning("mask AP: no detections; reporting AP 0")
        has_gt = {gt.anns[a]["category_id"] for a in gt.anns if not gt.anns[a].get("iscrowd", 0)}
        return {
            **dict.fromkeys(SUMMARY_KEYS, 0.0),
            "per_class": {n: 0.0 if c in has_gt else None for c, n in names.items()},
        }
    with contextlib.redirect_stdout(output):
        evaluator = coco_eval(gt, gt.loadRes(detections), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("COCOeval output:\n%s", output.getvalue())
    summary = {key: _defined(value) for key, value in zip(SUMMARY_KEYS, evaluator.stats[:6], strict=True)}
    # precision[T, R, K, A, M]: all areas (A = 0), 100 detections (M = -1)
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for position, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, position]
        per_class[names[category_id]] = float(values[values > -1].mean()) if (values > -1).any() else None
    return {**summary, "per_class": per_class}


def _defined(value: float) -> float | None:
    return None if value < 0 else float(value)


def _load_results(results: str | Path | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(results, (str, Path)):
        results = read_json(results, missing=f"mask results not found: {results}")
    if not isinstance(results, list):
        raise DataError("mask results must be a list of {image_id, category_id, segmentation, score}")
    return results


def _map_image_ids(results: list[dict[str, Any]], gt: COCO, gt_json: Path) -> list[dict[str, Any]]:
    """Copies of the results with COCO image ids; segm only (a 'bbox' key would make loadRes use box areas).

    A result's `cs_image_id` (what `export-masks` writes) decides its image, never the integer id alone, which
    every split numbers from 1; a result of an image the split lacks, or whose mask has another size than the
    image, is a DataError."""
    lookup: dict[Any, dict[str, Any]] = {}
    by_cs_id: dict[str, dict[str, Any]] = {}
    for image in gt.dataset.get("images", []):
        file_name = str(image.get("file_name", ""))
        base = Path(file_name).name
        names = [image["id"], file_name, base, base.removesuffix(IMAGE_SUFFIX), image.get("cs_image_id")]
        lookup.update({name: image for name in names if name not in (None, "")})
        if image.get("cs_image_id"):
            by_cs_id[image["cs_image_id"]] = image
    categories = {category["id"] for category in gt.dataset.get("categories", [])}
    mapped = []
    for result in results:
        try:
            image_id, category_id = result["image_id"], result["category_id"]
            entry = {"segmentation": copy.deepcopy(result["segmentation"]), "score": float(result["score"])}
        except (KeyError, TypeError):
            raise DataError("every mask result needs image_id, category_id, segmentation and score") from None
        image = _result_image(result, image_id, lookup, by_cs_id, gt_json)
        if category_id not in categories:
            raise DataError(f"mask result with category_id {category_id}, not one of {sorted(categories)} in {gt_json}")
        size = entry["segmentation"].get("size") if isinstance(entry["segmentation"], dict) else None
        expected = [image.get("height"), image.get("width")]
        if size is not None and None not in expected and list(size) != expected:
            raise DataError(
                f"the masks of {image.get('cs_image_id', image_id)} are {size[1]}×{size[0]} but the image is "
                f"{expected[1]}×{expected[0]} in {gt_json}: export the masks from the same images"
            )
        mapped.append({"image_id": image["id"], "category_id": category_id, **entry})
    return mapped


def _result_image(
    result: dict[str, Any],
    image_id: Any,
    lookup: dict[Any, dict[str, Any]],
    by_cs_id: dict[str, dict[str, Any]],
    gt_json: Path,
) -> dict[str, Any]:
    cs_image_id = result.get("cs_image_id")
    if cs_image_id is not None:
        if cs_image_id not in by_cs_id:
            raise DataError(
                f"mask result for image {cs_image_id!r}, which is not in {gt_json}: were the masks exported from "
                "another split? (pass the same --split to export-masks and eval)"
            )
        return by_cs_id[cs_image_id]
    if image_id not in lookup:
        raise DataError(f"mask result for image {image_id!r}, which is not in {gt_json}")
    return lookup[image_id]
