"""The Cityscapes label tables (SPEC §2), read once from cityscapesscripts: train ids, the thing/stuff split, the
label-id mappings and the panoptic id encoding. A leaf module: every layer may import it, it imports no lpsctl part.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import labels as CS_LABELS
from cityscapesscripts.helpers.labels import name2label

IGNORE = 255  # train id of void pixels (and of padding)
#: thing segment / instance id = label id · INSTANCE_OFFSET + k (Cityscapes instanceIds and panoptic ids)
INSTANCE_OFFSET = 1000
#: polygon label of a crowd of a thing class: `cargroup` is a group of cars (cityscapesscripts' json2labelImg rule)
GROUP_SUFFIX = "group"

_TRAINED = [lb for lb in CS_LABELS if 0 <= lb.trainId < IGNORE]
NUM_CLASSES = len({lb.trainId for lb in _TRAINED})  # 19 train ids
#: train ids 0-10 are stuff, 11-18 are things (person … bicycle)
STUFF_TRAIN_IDS: tuple[int, ...] = tuple(lb.trainId for lb in _TRAINED if not lb.hasInstances)
THING_TRAIN_IDS: tuple[int, ...] = tuple(lb.trainId for lb in _TRAINED if lb.hasInstances)
NUM_THING_CLASSES = len(THING_TRAIN_IDS)  # SOLOv2's / Mask R-CNN's categories: thing index 0-7
#: thing class index (0-7) → Cityscapes label id (24-28, 31-33)
THING_LABEL_IDS: tuple[int, ...] = tuple(lb.id for lb in _TRAINED if lb.hasInstances)
#: train id (0-18) → label id
TRAIN_TO_LABEL_ID: tuple[int, ...] = tuple(
    next(lb.id for lb in _TRAINED if lb.trainId == t) for t in range(NUM_CLASSES)
)
CLASS_NAMES: tuple[str, ...] = tuple(next(lb.name for lb in _TRAINED if lb.trainId == t) for t in range(NUM_CLASSES))
THING_NAMES: tuple[str, ...] = tuple(CLASS_NAMES[t] for t in THING_TRAIN_IDS)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    next(lb.color for lb in _TRAINED if lb.trainId == t) for t in range(NUM_CLASSES)
)


#: the COCO instance categories: the 8 evaluated thing classes (person … bicycle), id = Cityscapes label id; caravan
#: and trailer have instances too but are ignored in evaluation, as in mmdetection's converter
COCO_THING_CATEGORIES: tuple[dict[str, Any], ...] = tuple(
    {"id": int(lb.id), "name": lb.name} for lb in CS_LABELS if lb.hasInstances and not lb.ignoreInEval
)


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


def label_id_to_train_id_lut() -> np.ndarray:
    """uint8[256]: label id → train id (255 for void and unknown)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for lb in CS_LABELS:
        if 0 <= lb.id < 256:
            lut[lb.id] = lb.trainId if 0 <= lb.trainId < IGNORE else IGNORE
    return lut


def label_id_to_thing_lut() -> np.ndarray:
    """int64[256]: label id → thing class index 0-7 (label → train id → index in THING_TRAIN_IDS), or -1."""
    train_to_thing = np.full(256, -1, dtype=np.int64)
    train_to_thing[list(THING_TRAIN_IDS)] = np.arange(NUM_THING_CLASSES)
    return train_to_thing[label_id_to_train_id_lut()]


def base_label_name(label: str) -> str:
    """The class of a polygon label: `cargroup` → `car` (a crowd), any other name unchanged."""
    if label not in name2label and label.endswith(GROUP_SUFFIX):
        return label[: -len(GROUP_SUFFIX)]
    return label


def label_name(label_id: int) -> str:
    """The Cityscapes name of a label id (the id itself as text when unknown)."""
    for lb in CS_LABELS:
        if lb.id == label_id:
            return lb.name
    return str(label_id)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """uint8[H, W, 3] with id = R + 256·G + 256²·B (the COCO/Cityscapes panoptic PNG encoding), from ids int[H, W]
    in [0, 256³); ValueError outside that range."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"panoptic ids must lie in [0, 256³), got {ids.min()}..{ids.max()}")
    rgba = np.ascontiguousarray(ids, dtype="<u4").view(np.uint8).reshape(*ids.shape, 4)
    return np.ascontiguousarray(rgba[..., :3])


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """int32[H, W] ids from uint8[H, W, 3 or 4] (a fourth channel, alpha, is ignored as the reference does)."""
    padded = np.zeros((*rgb.shape[:2], 4), dtype=np.uint8)
    padded[..., :3] = rgb[..., :3]
    return padded.view("<u4")[..., 0].astype(np.int32)
