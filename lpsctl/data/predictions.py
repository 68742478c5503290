"""Writing prediction folders in the Cityscapes/COCO panoptic format (SPEC §2): RGB-encoded id PNGs and the panoptic
JSON (the readers are `lpsctl.imagefile.read_panoptic_png` and `lpsctl.jsonfile.read_panoptic_json`).

Layout of a prediction folder: `panoptic/{image_id}_panoptic.png` + `panoptic.json` (what `evaluate_panoptic` reads),
and `semantic/{image_id}_labelTrainIds.png` for mIoU. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lpsctl.atomic import write_bytes_atomic
from lpsctl.errors import DataError
from lpsctl.imagefile import png_bytes
from lpsctl.labels import INSTANCE_OFFSET, id_to_rgb, panoptic_categories

if TYPE_CHECKING:
    from lpsctl.structures import PanopticPrediction

PANOPTIC_FOLDER = "panoptic"
PANOPTIC_JSON = "panoptic.json"
SEMANTIC_FOLDER = "semantic"
GT_TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


def panoptic_png_path(prediction_dir: str | Path, image_id: str) -> Path:
    return Path(prediction_dir) / PANOPTIC_FOLDER / f"{image_id}_panoptic.png"


def semantic_png_path(prediction_dir: str | Path, image_id: str) -> Path:
    return Path(prediction_dir) / SEMANTIC_FOLDER / f"{image_id}_labelTrainIds.png"


def write_panoptic(prediction_dir: str | Path, image_id: str, prediction: PanopticPrediction) -> dict[str, Any]:
    """Write `panoptic/{image_id}_panoptic.png` and return its JSON annotation (image_id, file_name, segments_info)."""
    path = panoptic_png_path(prediction_dir, image_id)
    # level 1: id maps compress well anyway, and saving dominates inference I/O at level 6
    write_bytes_atomic(path, png_bytes(id_to_rgb(prediction.ids), compress_level=1))
    return {
        "image_id": image_id,
        "file_name": path.name,
        "segments_info": [_plain_segment(segment) for segment in prediction.segments_info],
    }


def write_panoptic_json(
    prediction_dir: str | Path,
    annotations: Iterable[dict[str, Any]],
    categories: list[dict[str, Any]] | None = None,
    *,
    images: list[dict[str, Any]] | None = None,
) -> Path:
    """Write `panoptic.json` ({annotations, categories}, and COCO's `images` list when given) next to the PNG
    folder; returns its path."""
    path = Path(prediction_dir) / PANOPTIC_JSON
    content: dict[str, Any] = {} if images is None else {"images": images}
    content |= {"annotations": list(annotations), "categories": categories or panoptic_categories()}
    write_bytes_atomic(path, json.dumps(content).encode())
    return path


def resize_nearest(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label or id map (any integer dtype) at (height, width) `size` by nearest neighbour, without interpolating
    ids (pixel centres map to pixel centres)."""
    height, width = ids.shape[:2]
    if (height, width) == tuple(size):
        return ids
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    columns = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return ids[rows[:, None], columns[None, :]]


def resize_prediction(prediction: PanopticPrediction, size: tuple[int, int]) -> PanopticPrediction:
    """`prediction` at (height, width) `size` (nearest neighbour: ids are never mixed), each segment's area and bbox
    measured again at that size; the prediction itself when it already has it."""
    if prediction.ids.shape == tuple(size):
        return prediction
    ids = resize_nearest(prediction.ids, size)
    measured = {segment["id"]: segment for segment in segments_from_ids(ids)}
    segments = [
        segment | {key: measured[segment["id"]][key] for key in ("area", "bbox")}
        for segment in prediction.segments_info
        if segment["id"] in measured
    ]
    return replace(prediction, ids=ids, segments_info=segments)


def segments_from_ids(ids: np.ndarray) -> list[dict[str, Any]]:
    """segments_info of a Cityscapes panoptic id map int[H, W] (0 void, stuff = label id, thing = label id · 1000 +
    k), sorted by id, as fusion writes it: id, category_id (label id), area, bbox [x, y, w, h], iscrowd 0."""
    segment_ids, inverse, areas = np.unique(ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(ids.shape)
    rows = np.arange(ids.shape[0])[:, None].repeat(ids.shape[1], 1).ravel()
    columns = np.tile(np.arange(ids.shape[1]), ids.shape[0])
    flat = inverse.ravel()
    count = len(segment_ids)
    x0, y0 = np.full(count, ids.shape[1]), np.full(count, ids.shape[0])
    x1, y1 = np.full(count, -1), np.full(count, -1)
    for low, positions in ((x0, columns), (y0, rows)):
        np.minimum.at(low, flat, positions)
    for high, positions in ((x1, columns), (y1, rows)):
        np.maximum.at(high, flat, positions)
    return [
        {
            "id": int(segment),
            "category_id": int(segment // INSTANCE_OFFSET if segment >= INSTANCE_OFFSET else segment),
            "area": int(area),
            "bbox": [int(x0[k]), int(y0[k]), int(x1[k] - x0[k] + 1), int(y1[k] - y0[k] + 1)],
            "iscrowd": 0,
        }
        for k, (segment, area) in enumerate(zip(segment_ids.tolist(), areas.tolist(), strict=True))
        if segment != 0
    ]


def write_semantic_png(prediction_dir: str | Path, image_id: str, train_ids: np.ndarray) -> Path:
    """Write `semantic/{image_id}_labelTrainIds.png` (uint8 train ids, 255 = void) for `evaluate_semantic`."""
    path = semantic_png_path(prediction_dir, image_id)
    write_bytes_atomic(path, png_bytes(np.asarray(train_ids, dtype=np.uint8), compress_level=1))
    return path


def _plain_segment(segment: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (numpy integers become ints)."""
    return {
        key: [int(v) for v in value] if key == "bbox" else (int(value) if isinstance(value, np.integer) else value)
        for key, value in segment.items()
    }


def semantic_pairs(root: str | Path, split: str, prediction_dir: str | Path) -> list[tuple[Path, Path]]:
    """(ground-truth labelTrainIds PNG, predicted semantic PNG) of every image of the split, for `evaluate_semantic`;
    DataError when the split has no prepared labels or a prediction is missing."""
    folder = Path(root) / "gtFine" / split
    gt_files = sorted(folder.glob(f"*/*{GT_TRAIN_IDS_SUFFIX}"))
    if not gt_files:
        raise DataError(f"no *{GT_TRAIN_IDS_SUFFIX} under {folder} (run `lpsctl data prepare` on the dataset first)")
    pairs = [(path, semantic_png_path(prediction_dir, path.name[: -len(GT_TRAIN_IDS_SUFFIX)])) for path in gt_files]
    missing = [prediction for _, prediction in pairs if not prediction.is_file()]
    if missing:
        raise DataError(f"no semantic prediction for {len(missing)} of {len(pairs)} images (first: {missing[0]})")
    return pairs
