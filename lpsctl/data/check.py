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
from lpsctl.imagefile import read_panoptic_png, read_png
from lpsctl.labels import GROUP_SUFFIX, INSTANCE_OFFSET, base_label_name
from lpsctl.parallel import parallel_map
from lpsctl.structures import ProgressCallback

REGENERATE = "run `lpsctl data synth` or re-download gtFine"
#: for an image whose gtFine source files are missing: `prepare` cannot derive anything from it
RESTORE_OR_REMOVE = "restore them (re-download gtFine, or `lpsctl data synth` for a synthetic set) or delete the image"
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


def check(
    root: Path,
    *,
    splits: Sequence[str] | None = None,
    quick: bool = False,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> list[str]:
    """Problems of the dataset at `root` (empty when complete and prepared); `splits=None` checks every split folder.

    Every image needs its gtFine files and every gtFine file its image; the prepared JSONs must parse and list every
    image. By default every PNG and polygons JSON is also read in full (`workers` processes; `progress(description,
    done, total)` per image): truncated files, sizes that differ from the image's, panoptic PNG ids that differ from
    their JSON segments. `quick` reads PNG headers only.
    """
    root = Path(root)
    if not root.is_dir():
        return [missing_root(root)]
    splits = list(dict.fromkeys(splits)) if splits else split_folders(root)
    if not splits:
        return [f"no split folders in {root / 'leftImg8bit'}: run `lpsctl data synth --root {root}` or download it"]
    return [problem for split in splits for problem in _check_split(root, split, quick, workers, progress)]


#: what each kind of problem says, for the summary's count by kind (the first that matches)
PROBLEM_KINDS = (
    ("unreadable file", ("corrupt or truncated", "not a valid polygons JSON", "is unreadable")),
    ("gtFine file without its image", ("have no image",)),
    ("missing file", ("missing", "not found")),
    ("size mismatch", ("differs from",)),
    ("panoptic ids unlike the JSON", ("segment ids",)),
    ("stale prepared file", ("is older than",)),
)


def problem_kinds(problems: Sequence[str]) -> dict[str, int]:
    """How many of `problems` are of each kind (PROBLEM_KINDS; "other" for the rest), in the order of the table."""
    counts: dict[str, int] = {}
    for problem in problems:
        kind = next((name for name, marks in PROBLEM_KINDS if any(mark in problem for mark in marks)), "other")
        counts[kind] = counts.get(kind, 0) + 1
    order = [name for name, _ in PROBLEM_KINDS] + ["other"]
    return {kind: counts[kind] for kind in order if kind in counts}


def split_folders(root: Path) -> list[str]:
    """Names of the split folders under `root/leftImg8bit` (sorted; hidden folders skipped)."""
    folder = Path(root) / "leftImg8bit"
    if not folder.is_dir():
        return []
    return sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def _check_split(root: Path, split: str, quick: bool, workers: int, progress: ProgressCallback | None) -> list[str]:
    prepare = f"run `lpsctl data prepare --root {root}`"
    try:
        items = list_images(root, split)
    except DataError as error:
        return [f"{error}: run `lpsctl data synth --root {root}` or download leftImg8bit"]
    problems = [
        _missing_files(split, [p.gt(kind) for p in items], RESTORE_OR_REMOVE)
        for kind in ("polygons.json", "labelIds.png", "instanceIds.png")
    ]
    if any(problems):  # prepare stops on the first image without its sources: say so rather than send the user there
        prepare = f"fix the missing gtFine files above, then run `lpsctl data prepare --root {root}`"
    problems.append(_missing_files(split, [p.gt("labelTrainIds.png") for p in items], prepare))
    problems.append(_orphans(root, split, items))
    newest = max(mtime_ns(p.gt("instanceIds.png")) for p in items)
    json_problems, segments = _check_json(
        panoptic_json(root, split), "panoptic JSON", "annotations", "image_id", items, prepare
    )
    problems += json_problems + _older(panoptic_json(root, split), "panoptic JSON", newest, prepare)
    pngs = [panoptic_folder(root, split) / str(entry.get("file_name", "")) for entry in segments]
    problems.append(_missing_files(split, pngs, prepare))
    json_problems, _ = _check_json(
        coco_json(root, split), "COCO instance JSON", "images", "cs_image_id", items, prepare
    )
    problems += json_problems + _older(coco_json(root, split), "COCO instance JSON", newest, prepare)
    if quick:
        problems += _size_problems(items, root)
    else:
        problems += _decoded_problems(root, split, items, segments, workers, progress)
    return [problem for problem in problems if problem]


def _orphans(root: Path, split: str, items: list[Paths]) -> str:
    """One line for the gtFine files of split whose image is not in leftImg8bit (a deleted or renamed image)."""
    folder = root / "gtFine" / split
    if not folder.is_dir():
        return ""
    images = {paths.image_id for paths in items}
    orphans = sorted(path for path in folder.glob("*/*_gtFine_*") if path.name.split("_gtFine_")[0] not in images)
    if not orphans:
        return ""
    return (
        f"{len(orphans)} gtFine files of split {split} have no image in {root / 'leftImg8bit' / split} (first: "
        f"{orphans[0]}): restore the image, or delete its gtFine files and run `lpsctl data prepare --root {root} "
        "--overwrite`"
    )


def _decoded_problems(
    root: Path,
    split: str,
    items: list[Paths],
    annotations: list[dict[str, Any]],
    workers: int,
    progress: ProgressCallback | None,
) -> list[str]:
    """Every image's PNGs and polygons JSON read in full, in parallel; MAX_LISTED problems of each kind listed."""
    segment_ids: dict[str, set[int]] = {}
    for entry in annotations:
        info = entry.get("segments_info", [])
        segment_ids[str(entry.get("image_id"))] = {int(s["id"]) for s in info if isinstance(s, dict) and "id" in s}
    tasks = [(paths, segment_ids.get(paths.image_id)) for paths in items]
    problems: list[str] = []
    # processes: libspng (pyspng) decodes holding the GIL
    for done, found in enumerate(parallel_map(_read_in_full, tasks, workers, processes=True), start=1):
        problems += found
        if progress is not None:
            progress(f"check {split}", done, len(tasks))
    listed: list[str] = []
    for kind, count in problem_kinds(problems).items():
        of_kind = [p for p in problems if next(iter(problem_kinds([p]))) == kind]
        listed += of_kind[:MAX_LISTED]
        if count > MAX_LISTED:
            listed.append(f"… and {count - MAX_LISTED} more of kind '{kind}' in split {split}")
    return listed


def _read_in_full(task: tuple[Paths, set[int] | None]) -> list[str]:
    """Problems of one image's files, each decoded: unreadable files, sizes unlike the image's, panoptic ids unlike
    the JSON's segments."""
    paths, segments = task
    root = paths.root
    regenerate_prepared = f"run `lpsctl data prepare --root {root} --overwrite`"
    fixes = {
        paths.image: "re-download it",
        paths.gt("labelIds.png"): REGENERATE,
        paths.gt("instanceIds.png"): REGENERATE,
        paths.gt("labelTrainIds.png"): regenerate_prepared,
        paths.panoptic_png: regenerate_prepared,
    }
    problems, sizes = [], {}
    for path, fix in fixes.items():
        if not path.is_file():
            continue  # listed by the missing-file checks
        try:
            pixels = read_panoptic_png(path) if path == paths.panoptic_png else read_png(path)
        except DataError as error:
            problems.append(f"{error}: {fix}")
            continue
        sizes[path] = pixels.shape[:2]
        if path == paths.panoptic_png and segments is not None:
            problems += _panoptic_id_problems(path, pixels, segments, regenerate_prepared)
    if paths.gt("polygons.json").is_file():
        try:
            sizes[paths.gt("polygons.json")] = read_polygons(paths.gt("polygons.json"))
        except DataError as error:
            problems.append(str(error))
    reference = sizes.pop(paths.image, None)
    for path, size in sizes.items():
        if reference is not None and tuple(size) != tuple(reference):
            problems.append(
                f"{path}: size {size[0]}×{size[1]} differs from its image {paths.image} ({reference[0]}×{reference[1]})"
                f": {fixes.get(path, REGENERATE)}"
            )
    return problems


def _panoptic_id_problems(path: Path, ids: np.ndarray, segments: set[int], fix: str) -> list[str]:
    present = {int(value) for value in np.unique(ids)} - {0}
    if present == segments:
        return []
    extra, absent = sorted(present - segments), sorted(segments - present)
    return [
        f"{path}: segment ids {extra[:3]} are not in its JSON segments and JSON segments {absent[:3]} are not in "
        f"the PNG: {fix}"
    ]


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
    path: Path, kind: str, section: str, key: str, items: list[Paths], fix: str
) -> tuple[list[str], list[dict[str, Any]]]:
    """A prepared JSON exists, parses and lists every image of the split under `data[section][*][key]`; returns the
    problems (each ending in `fix`) and the entries of `section`."""
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
