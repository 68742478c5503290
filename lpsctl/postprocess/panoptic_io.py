"""Prediction files in the Cityscapes/COCO panoptic format (SPEC §2): RGB-encoded id PNGs and the panoptic JSON.

Layout of a prediction folder: `panoptic/{image_id}_panoptic.png` + `panoptic.json` (what `evaluate_panoptic` reads),
and `semantic/{image_id}_labelTrainIds.png` for mIoU. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cityscapesscripts.helpers.labels import labels as CS_LABELS
from PIL import Image

from lpsctl.atomic import write_bytes_atomic
from lpsctl.errors import DataError
from lpsctl.jsonfile import read_json

if TYPE_CHECKING:  # evaluation imports this module: keep torch out of it
    from lpsctl.structures import PanopticPrediction

PANOPTIC_FOLDER = "panoptic"
PANOPTIC_JSON = "panoptic.json"
SEMANTIC_FOLDER = "semantic"


def panoptic_png_path(prediction_dir: str | Path, image_id: str) -> Path:
    return Path(prediction_dir) / PANOPTIC_FOLDER / f"{image_id}_panoptic.png"


def semantic_png_path(prediction_dir: str | Path, image_id: str) -> Path:
    return Path(prediction_dir) / SEMANTIC_FOLDER / f"{image_id}_labelTrainIds.png"


def panoptic_categories() -> list[dict[str, Any]]:
    """The categories of the Cityscapes panoptic JSON, exactly as cityscapesscripts' createPanopticImgs lists them."""
    return [
        {
            "id": int(label.id),
            "name": label.name,
            "color": list(label.color),
            "supercategory": label.category,
            "isthing": 1 if label.hasInstances else 0,
        }
        for label in CS_LABELS
        if not label.ignoreInEval
    ]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """uint8[H, W, 3] with id = R + 256·G + 256²·B, from ids int[H, W] in [0, 256³)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise DataError(f"panoptic ids must lie in [0, 256³), got {ids.min()}..{ids.max()}")
    rgba = np.ascontiguousarray(ids, dtype="<u4").view(np.uint8).reshape(*ids.shape, 4)
    return np.ascontiguousarray(rgba[..., :3])


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """int32[H, W] ids from uint8[H, W, 3 or 4] (a fourth channel, alpha, is ignored as the reference does)."""
    padded = np.zeros((*rgb.shape[:2], 4), dtype=np.uint8)
    padded[..., :3] = rgb[..., :3]
    return padded.view("<u4")[..., 0].astype(np.int32)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """int32[H, W] segment ids of an RGB panoptic PNG; DataError when missing, unreadable or not RGB."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"panoptic PNG not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA"):
                raise DataError(f"{path}: panoptic PNGs must be RGB (id = R + 256·G + 256²·B), got mode {image.mode}")
            image.load()  # decoding inside convert() on the open file is 2-3× slower
            converted = image.convert("RGBA")
        rgba = np.asarray(converted)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path}: corrupt or truncated image ({error})") from None
    # one pass: the little-endian word of R, G, B, A is id + A·256³; ids < 256³ fit int32 unchanged
    return (rgba.view("<u4")[..., 0] & 0xFFFFFF).view(np.int32)


def write_panoptic(prediction_dir: str | Path, image_id: str, prediction: PanopticPrediction) -> dict[str, Any]:
    """Write `panoptic/{image_id}_panoptic.png` and return its JSON annotation (image_id, file_name, segments_info)."""
    path = panoptic_png_path(prediction_dir, image_id)
    write_bytes_atomic(path, _png_bytes(id_to_rgb(prediction.ids)))
    return {
        "image_id": image_id,
        "file_name": path.name,
        "segments_info": [_plain_segment(segment) for segment in prediction.segments_info],
    }


def write_panoptic_json(
    prediction_dir: str | Path,
    annotations: Iterable[dict[str, Any]],
    categories: list[dict[str, Any]] | None = None,
) -> Path:
    """Write `panoptic.json` ({annotations, categories}) next to the PNG folder; returns its path."""
    path = Path(prediction_dir) / PANOPTIC_JSON
    content = {"annotations": list(annotations), "categories": categories or panoptic_categories()}
    write_bytes_atomic(path, json.dumps(content).encode())
    return path


def read_panoptic_json(path: str | Path) -> dict[str, Any]:
    """A panoptic JSON (ground truth or prediction) with a clear error when missing or malformed."""
    content = read_json(path, missing=f"panoptic JSON not found: {path}")
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        raise DataError(f"{path}: not a panoptic JSON (expected an object with an 'annotations' list)")
    return content


def write_semantic_png(prediction_dir: str | Path, image_id: str, train_ids: np.ndarray) -> Path:
    """Write `semantic/{image_id}_labelTrainIds.png` (uint8 train ids, 255 = void) for `evaluate_semantic`."""
    path = semantic_png_path(prediction_dir, image_id)
    write_bytes_atomic(path, _png_bytes(np.asarray(train_ids, dtype=np.uint8)))
    return path


def _plain_segment(segment: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (numpy integers become ints)."""
    return {
        key: [int(v) for v in value] if key == "bbox" else (int(value) if isinstance(value, np.integer) else value)
        for key, value in segment.items()
    }


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # level 1: id maps compress well anyway, and saving dominates inference I/O at level 6
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
