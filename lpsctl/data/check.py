"""`lpsctl data check` and the input validators `prepare` runs (SPEC §2): the layout, labels and prepared files of a
Cityscapes-format dataset; every problem names the file and the command that fixes it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import id2label, name2label
from PIL import Image

from lpsctl.data.cityscapes import (
    Paths,
    coco_json,
    list_images,
    missing_root,
    mtime_ns,
    panoptic_folder,
    panoptic_json,
)
from lpsctl.errors import DataError
from lpsctl.imagefile import read_png
from lpsctl.labels import GROUP_SUFFIX, INSTANCE_OFFSET, base_label_name

REGENERATE = "run `lpsctl data synth` or re-download gtFine"
#: size mismatches listed per split before the rest is summarised in a count
MAX_LISTED = 5


def _valid_instance_values() -> np.ndarray:
    """bool[INSTANCE_OFFSET·(max label id + 1)]: the values an instanceIds PNG may hold (labelId, or
    labelId·INSTANCE_OFFSET + k)."""
    known = [label_id for label_id in id2label if label_id >= 0]
    valid = np.zeros(INSTANCE_OFFSET * (max(known) + 1), dtype=bool)
    valid[known] = True
    for label_id in known:
        if label_id > 0:
            valid[INSTANCE_OFFSET * label_id : INSTANCE_OFFSET * (label_id + 1)] = True
    return valid


_VALID_INSTANCE_VALUE = _valid_instance_values()


def check(root: Path, *, splits: Sequence[str] | None = None) -> list[str]:
    """Problems of the dataset at `root` (empty when complete and prepared); `splits=None` checks every split folder.

    Cheap: files are tested for existence and PNGs read only to their header; JSONs are parsed.
    """
    root = Path(root)
    if not root.is_dir():
        return [missing_root(root)]
    splits = list(dict.fromkeys(splits)) if splits else split_folders(root)
    if not splits:
        return [f"no split folders in {root / 'leftImg8bit'}: run `lpsctl data synth --root {root}` or download it"]
    return [problem for split in splits for problem in _check_split(root, split)]


def split_folders(root: Path) -> list[str]:
    """Names of the split folders under `root/leftImg8bit` (sorted; hidden folders skipped)."""
    folder = Path(root) / "leftImg8bit"
    if not folder.is_dir():
        return []
    return sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def _check_split(root: Path, split: str) -> list[str]:
    prepare = f"run `lpsctl data prepare --root {root}`"
    try:
        items = list_images(root, split)
    except DataError as error:
        return [f"{error}: run `lpsctl data synth --root {root}` or download leftImg8bit"]
    problems = [
        _missing_files(split, [p.gt(kind) for p in items], REGENERATE)
        for kind in ("polygons.json", "labelIds.png", "instanceIds.png")
    ]
    problems.append(_missing_files(split, [p.gt("labelTrainIds.png") for p in items], prepare))
    problems += _size_problems(items, root)
    newest = max(mtime_ns(p.gt("instanceIds.png")) for p in items)
    json_problems, segments = _check_json(panoptic_json(root, split), "panoptic JSON", "annotations", "image_id", items)
    problems += json_problems + _older(panoptic_json(root, split), "panoptic JSON", newest, prepare)
    pngs = [panoptic_folder(root, split) / str(entry.get("file_name", "")) for entry in segments]
    problems.append(_missing_files(split, pngs, prepare))
    json_problems, _ = _check_json(coco_json(root, split), "COCO instance JSON", "images", "cs_image_id", items)
    problems += json_problems + _older(coco_json(root, split), "COCO instance JSON", newest, prepare)
    return [problem for problem in problems if problem]


def _missing_files(split: str, paths: list[Path], fix: str) -> str:
    """One line for all missing files of one kind (Cityscapes has thousands of images)."""
    missing = [path for path in paths if not path.is_file()]
    if not missing:
        return ""
    kind = missing[0].name.rsplit("_", 1)[-1]
    return f"{kind} missing for {len(missing)} of {len(paths)} images of split {split} (first: {missing[0]}): {fix}"


def _size_problems(items: list[Paths], root: Path) -> list[str]:
    """Header-only size comparison of each image with its instanceIds and labelTrainIds PNGs."""
    problems = []
    for paths in items:
        sizes = {}
        for path in (paths.image, paths.gt("instanceIds.png"), paths.gt("labelTrainIds.png")):
            if path.is_file():
                try:
                    sizes[path] = image_size(path, verify=False)
                except DataError as error:
                    problems.append(str(error))
        reference = sizes.pop(paths.image, None)
        for path, size in sizes.items():
            if reference is not None and size != reference:
                fix = (
                    REGENERATE if "instanceIds" in path.name else f"run `lpsctl data prepare --root {root} --overwrite`"
                )
                problems.append(
                    f"{path}: size {size[0]}×{size[1]} differs from its image {paths.image} "
                    f"({reference[0]}×{reference[1]}): {fix}"
                )
    if len(problems) > MAX_LISTED:
        problems = problems[:MAX_LISTED] + [f"… and {len(problems) - MAX_LISTED} more size problems"]
    return problems


def _check_json(
    path: Path, kind: str, section: str, key: str, items: list[Paths]
) -> tuple[list[str], list[dict[str, Any]]]:
    """A prepared JSON exists, parses and lists every image of the split under `data[section][*][key]`; returns the
    problems and the entries of `section`."""
    fix = f"run `lpsctl data prepare --root {items[0].root}`"
    if not path.is_file():
        return [f"{kind} missing for split {items[0].split}: {fix}"], []
    try:
        listed, entries = listed_ids(path, section, key)
    except DataError as error:
        return [f"{kind} {error}: {fix}"], []
    unlisted = [p.image_id for p in items if p.image_id not in listed]
    if unlisted:
        return [
            f"{kind} {path} lacks {len(unlisted)} image(s) of split {items[0].split} (first: {unlisted[0]}): {fix}"
        ], []
    return [], entries


def _older(path: Path, kind: str, newest_input: int, fix: str) -> list[str]:
    if path.is_file() and mtime_ns(path) < newest_input:
        return [f"{kind} {path} is older than the instanceIds PNGs it is made from: {fix}"]
    return []


def listed_ids(path: Path, section: str, key: str) -> tuple[set[str], list[dict[str, Any]]]:
    """The ids a prepared JSON lists (`str(data[section][*][key])`) and the entries of `section`; DataError
    "{path} is unreadable (…)" when it is missing or has another structure."""
    try:
        entries = json.loads(path.read_text())[section]
        return {str(entry[key]) for entry in entries}, entries
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} is unreadable ({type(error).__name__}: {error})") from None


# --- validators that `prepare` runs on each input it reads (full checks, `DataError` on the first problem) ---------


def read_polygons(path: Path) -> tuple[int, int]:
    """(height, width) of a polygons JSON, after checking what cityscapesscripts would otherwise `sys.exit` on."""
    if not path.is_file():
        raise DataError(f"file not found: {path} ({REGENERATE})")
    try:
        data = json.loads(path.read_text())
        size = int(data["imgHeight"]), int(data["imgWidth"])
        for index, item in enumerate(data["objects"]):
            _check_object(path, index, str(item["label"]), np.asarray(item["polygon"], dtype=np.float64), item)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a valid polygons JSON ({type(error).__name__}: {error}); {REGENERATE}") from None
    return size


def _check_object(path: Path, index: int, label: str, points: np.ndarray, item: dict[str, Any]) -> None:
    """The label rules of json2labelImg (deleted objects skipped; `base_label_name`: `cargroup` is a crowd of cars),
    as a clear error."""
    if item.get("deleted"):
        return
    name = base_label_name(label)
    if name not in name2label:
        raise DataError(
            f"{path}: unknown label '{label}' (object {index}); labels must be names from cityscapesscripts.helpers."
            f"labels, or a thing name + '{GROUP_SUFFIX}' for a crowd (e.g. 'car{GROUP_SUFFIX}')"
        )
    if name2label[name].id >= 0 and (points.ndim != 2 or points.shape[1] != 2 or len(points) < 2):
        raise DataError(f"{path}: object {index} ('{label}') needs a polygon of at least 2 [x, y] points")


def image_size(path: Path, *, verify: bool) -> tuple[int, int]:
    """(height, width) from the PNG header; `verify` also checks every chunk's CRC (finds truncation, no decoding)."""
    if not path.is_file():
        raise DataError(f"file not found: {path} ({REGENERATE})")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if verify:
                image.verify()
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path}: corrupt or truncated image ({error}); re-download it") from None
    return height, width


def read_instance_ids(path: Path) -> np.ndarray:
    """int32[H, W] instanceIds, fully decoded; every value must be a label id or labelId·INSTANCE_OFFSET + k."""
    if not path.is_file():
        raise DataError(f"file not found: {path} ({REGENERATE})")
    instance_ids = read_png(path)
    if instance_ids.ndim != 2:
        raise DataError(
            f"{path}: expected a one-channel instance id PNG, got shape {instance_ids.shape} ({REGENERATE})"
        )
    instance_ids = instance_ids.astype(np.int32)
    # a table lookup instead of np.unique: this runs on every full-size image
    if instance_ids.min() < 0 or instance_ids.max() >= len(_VALID_INSTANCE_VALUE):
        invalid = np.unique(instance_ids[(instance_ids < 0) | (instance_ids >= len(_VALID_INSTANCE_VALUE))])
    else:
        invalid = np.unique(instance_ids[~_VALID_INSTANCE_VALUE[instance_ids]])
    if invalid.size:
        raise DataError(
            f"{path}: values {invalid[:5].tolist()} are not Cityscapes ids (labelId or labelId·{INSTANCE_OFFSET} + k)"
        )
    return instance_ids


def same_size(reference: Path, expected: tuple[int, ...], path: Path, actual: tuple[int, ...]) -> None:
    if tuple(actual) != tuple(expected):
        raise DataError(
            f"{path}: size {actual[0]}×{actual[1]} (height×width) differs from {expected[0]}×{expected[1]} in "
            f"{reference}; an image and its labels must have the same size"
        )
