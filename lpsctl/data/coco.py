"""COCO instance annotations from Cityscapes `instanceIds.png` (SPEC §2), in the layout mmdetection's converter writes:
`annotations/instancesonly_filtered_gtFine_{split}.json`, 8 thing categories keyed by Cityscapes label id, RLE masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from lpsctl.labels import COCO_THING_CATEGORIES, INSTANCE_OFFSET

_THING_IDS = np.array([category["id"] for category in COCO_THING_CATEGORIES])


def instance_annotations(instance_ids: np.ndarray) -> list[dict[str, Any]]:
    """COCO annotations of one image, without `id`/`image_id` (assigned by `build_dataset`).

    instance_ids: int[H, W] Cityscapes instanceIds (thing instance = labelId·1000 + k; crowd or stuff = labelId).
    Returns one `iscrowd=0` entry per thing instance and one `iscrowd=1` entry per thing class with crowd (group)
    pixels, in ascending id order (crowd regions first). `segmentation` is an uncompressed-size RLE whose counts are
    a str, `bbox` [x, y, w, h] floats (pycocotools `toBbox`), `area` int.
    """
    values = _present_values(instance_ids)
    label_ids = np.where(values >= INSTANCE_OFFSET, values // INSTANCE_OFFSET, values)
    keep = np.isin(label_ids, _THING_IDS)
    if not keep.any():
        return []
    # one Fortran-ordered copy, so every per-value comparison is already in the layout pycocotools encodes
    fortran_ids = np.asfortranarray(instance_ids)
    annotations = []
    for value, label_id in zip(values[keep].tolist(), label_ids[keep].tolist(), strict=True):
        rle = mask_utils.encode((fortran_ids == value).view(np.uint8))
        annotations.append(
            {
                "category_id": int(label_id),
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": int(value < INSTANCE_OFFSET),
            }
        )
    return annotations


def _present_values(instance_ids: np.ndarray) -> np.ndarray:
    """np.unique(instance_ids), by counting when the ids are small non-negative ints (3× faster on 1024×2048)."""
    if instance_ids.size and instance_ids.min() >= 0 and instance_ids.max() < 1 << 20:
        return np.flatnonzero(np.bincount(instance_ids.ravel()))
    return np.unique(instance_ids)


def image_entry(city: str, image_id: str, height: int, width: int) -> dict[str, Any]:
    """The `images` entry of one Cityscapes image, without the integer `id`; `file_name` is relative to
    `leftImg8bit/{split}` and `cs_image_id` (`{city}_{seq}_{frame}`) keys predictions back to Cityscapes files."""
    return {
        "file_name": f"{city}/{image_id}_leftImg8bit.png",
        "segm_file": f"{city}/{image_id}_gtFine_instanceIds.png",
        "cs_image_id": image_id,
        "height": int(height),
        "width": int(width),
    }


def build_dataset(per_image: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[str, Any]:
    """Number images and annotations (both from 1, in the given order) and assemble the COCO dict.

    Ids start at 1 because pycocotools' COCOeval treats a matched ground-truth id of 0 as "unmatched".
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_number, (image, image_annotations) in enumerate(per_image, start=1):
        images.append({"id": image_number, **image})
        for annotation in image_annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": image_number, **annotation})
    return {"images": images, "annotations": annotations, "categories": [dict(c) for c in COCO_THING_CATEGORIES]}
