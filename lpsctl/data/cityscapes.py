"""Cityscapes facts (SPEC §2): label tables from cityscapesscripts, file layout, image ids, reading PNGs with clear
errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as CS_LABELS
from PIL import Image

from lpsctl.errors import DataError

IGNORE = 255
NUM_CLASSES = 19
#: train ids 0-10 are stuff, 11-18 are things (person … bicycle)
STUFF_TRAIN_IDS: tuple[int, ...] = tuple(
    lb.trainId for lb in CS_LABELS if 0 <= lb.trainId < 255 and not lb.hasInstances
)
THING_TRAIN_IDS: tuple[int, ...] = tuple(lb.trainId for lb in CS_LABELS if 0 <= lb.trainId < 255 and lb.hasInstances)
#: thing class index (0-7, SOLOv2's categories) → Cityscapes label id (24-28, 31-33) and back
THING_LABEL_IDS: tuple[int, ...] = tuple(lb.id for lb in CS_LABELS if 0 <= lb.trainId < 255 and lb.hasInstances)
#: train id (0-18) → label id
TRAIN_TO_LABEL_ID: tuple[int, ...] = tuple(
    next(lb.id for lb in CS_LABELS if lb.trainId == t) for t in range(NUM_CLASSES)
)
CLASS_NAMES: tuple[str, ...] = tuple(next(lb.name for lb in CS_LABELS if lb.trainId == t) for t in range(NUM_CLASSES))
THING_NAMES: tuple[str, ...] = tuple(CLASS_NAMES[t] for t in THING_TRAIN_IDS)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    next(lb.color for lb in CS_LABELS if lb.trainId == t) for t in range(NUM_CLASSES)
)

IMAGE_SUFFIX = "_leftImg8bit.png"
SPLITS = ("train", "val", "test")


def label_id_to_train_id_lut() -> np.ndarray:
    """uint8[256]: label id → train id (255 for void and unknown)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for lb in CS_LABELS:
        if 0 <= lb.id < 256:
            lut[lb.id] = lb.trainId if 0 <= lb.trainId < 255 else IGNORE
    return lut


@dataclass(frozen=True)
class Paths:
    """Where the files of one Cityscapes image live; `image_id` is `{city}_{seq:06d}_{frame:06d}`."""

    root: Path
    split: str
    city: str
    image_id: str

    @property
    def image(self) -> Path:
        return self.root / "leftImg8bit" / self.split / self.city / f"{self.image_id}{IMAGE_SUFFIX}"

    def gt(self, kind: str) -> Path:
        """kind: polygons.json, labelIds.png, instanceIds.png, color.png or labelTrainIds.png."""
        return self.root / "gtFine" / self.split / self.city / f"{self.image_id}_gtFine_{kind}"

    @property
    def panoptic_png(self) -> Path:
        return panoptic_folder(self.root, self.split) / f"{self.image_id}_gtFine_panoptic.png"


def panoptic_json(root: Path, split: str) -> Path:
    return Path(root) / "gtFine" / f"cityscapes_panoptic_{split}.json"


def panoptic_folder(root: Path, split: str) -> Path:
    return Path(root) / "gtFine" / f"cityscapes_panoptic_{split}"


def coco_json(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"instancesonly_filtered_gtFine_{split}.json"


def list_images(root: str | Path, split: str) -> list[Paths]:
    """Every image of a split, sorted by image id; a clear error when the root or the split is missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset root not found: {root} (create one with `lpsctl data synth --root {root}` "
            "or point --root at a Cityscapes download)"
        )
    folder = root / "leftImg8bit" / split
    if not folder.is_dir():
        raise DataError(f"split '{split}' not found: {folder} is missing")
    items = [
        Paths(root, split, path.parent.name, path.name[: -len(IMAGE_SUFFIX)])
        for path in folder.glob(f"*/*{IMAGE_SUFFIX}")
    ]
    if not items:
        raise DataError(f"split '{split}' has no images: no */*{IMAGE_SUFFIX} under {folder}")
    return sorted(items, key=lambda p: p.image_id)


def read_png(path: Path, mode: str | None = None) -> np.ndarray:
    """Read a PNG fully (so truncation is detected now); `mode` converts (e.g. "RGB"). Clear error when unreadable."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            converted = image.convert(mode) if mode is not None and image.mode != mode else image
            return np.asarray(converted)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path}: corrupt or truncated image ({error})") from None
