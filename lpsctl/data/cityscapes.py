"""The Cityscapes file layout (SPEC §2): where each file of an image lives, listing a split, file modification
times. The label tables are in `lpsctl.labels`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpsctl.errors import DataError

IMAGE_SUFFIX = "_leftImg8bit.png"
SPLITS = ("train", "val", "test")


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


def missing_root(root: Path) -> str:
    """The one message for a dataset root that does not exist."""
    return (
        f"dataset root not found: {root} (point --root at a Cityscapes download, or create a synthetic dataset with "
        f"`lpsctl data synth --root {root}`)"
    )


def require_root(root: str | Path) -> Path:
    """`root` as a Path; DataError(`missing_root`) when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(missing_root(root))
    return root


def list_images(root: str | Path, split: str) -> list[Paths]:
    """Every image of a split, sorted by image id; a clear error when the root or the split is missing or empty."""
    root = require_root(root)
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


def mtime_ns(path: Path) -> int:
    """Modification time of `path` in ns; -1 when it does not exist, so a missing file is older than any other (a
    missing output is never up to date, a missing input never the newest)."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return -1
