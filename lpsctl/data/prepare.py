"""`lpsctl data prepare` (SPEC §2): labelTrainIds PNGs, the panoptic JSON + PNGs and the COCO instance JSON of every
split, made with cityscapesscripts; parallel over worker processes, idempotent (mtime) and atomic (temp + rename)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from cityscapesscripts.preparation.json2labelImg import json2labelImg

from lpsctl.atomic import atomic_path
from lpsctl.data import coco
from lpsctl.data.check import image_size, listed_ids, read_instance_ids, read_polygons, same_size, split_folders
from lpsctl.data.cityscapes import (
    Paths,
    coco_json,
    list_images,
    mtime_ns,
    panoptic_folder,
    panoptic_json,
    require_root,
)
from lpsctl.errors import DataError
from lpsctl.parallel import parallel_map

if TYPE_CHECKING:  # structures imports torch, which worker processes do not need
    from lpsctl.structures import ProgressCallback

log = logging.getLogger(__name__)
#: panoptic chunks per worker: enough for a moving progress bar and a short last chunk
CHUNKS_PER_WORKER = 4
Task = TypeVar("Task")
Result = TypeVar("Result")


@dataclass
class PrepareReport:
    """What one `prepare` call did, per output kind: `labelTrainIds` PNGs, `panoptic` sets (JSON + PNG folder) and
    `coco` JSONs, counted as made or already up to date."""

    root: Path
    splits: list[str] = field(default_factory=list)
    images: int = 0
    made: Counter[str] = field(default_factory=Counter)
    up_to_date: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        kinds = (("labelTrainIds", "labelTrainIds PNGs"), ("panoptic", "panoptic sets"), ("coco", "COCO JSONs"))
        made = ", ".join(f"{self.made[key]} {name}" for key, name in kinds)
        return (
            f"{self.root} ({', '.join(self.splits)}; {self.images} images): made {made}; "
            f"{sum(self.up_to_date.values())} outputs already up to date"
        )

    def count(self, kind: str, made: int, total: int) -> None:
        self.made[kind] += made
        self.up_to_date[kind] += total - made


@dataclass(frozen=True)
class ImageTask:
    """Per-image work: remake labelTrainIds; read and validate instanceIds; compute its COCO annotations."""

    paths: Paths
    train_ids: bool
    read_instances: bool
    coco: bool


def prepare(
    root: Path,
    *,
    splits: list[str] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> PrepareReport:
    """Make every derived file of `splits` (None: every split folder under `leftImg8bit/`).

    Outputs newer than their inputs are kept unless `overwrite`. Bad input raises `DataError` naming the file, before
    the split's panoptic and COCO outputs are touched; outputs are renamed into place, never written in place.
    `workers` > 1 runs the per-image work and the panoptic conversion in that many processes; `progress` is called
    as `progress("prepare {split}", done, total)` and `progress("panoptic {split}", done, total)` (images).
    """
    root = Path(root)
    report = PrepareReport(root=root, splits=resolve_splits(root, splits))
    for split in report.splits:
        _prepare_split(root, split, max(workers, 1), overwrite, progress, report)
    log.info("prepared %s", report)
    return report


def resolve_splits(root: Path, splits: Sequence[str] | None) -> list[str]:
    """The requested splits without repeats, or every split folder under `leftImg8bit/`; a clear error if none."""
    require_root(root)
    if splits:
        return list(dict.fromkeys(splits))
    found = split_folders(root)
    if not found:
        raise DataError(f"no split folders in {root / 'leftImg8bit'}: expected leftImg8bit/{{split}}/{{city}}/*.png")
    return found


def _prepare_split(
    root: Path, split: str, workers: int, overwrite: bool, progress: ProgressCallback | None, report: PrepareReport
) -> None:
    items = list_images(root, split)
    report.images += len(items)
    instance_files = [p.gt("instanceIds.png") for p in items]
    make_panoptic = overwrite or not _panoptic_fresh(root, split, items, _newest(instance_files))
    make_coco = overwrite or not _coco_fresh(root, split, items, _newest(instance_files + [p.image for p in items]))
    tasks = [
        ImageTask(
            paths=p,
            train_ids=overwrite or not _train_ids_fresh(p),
            read_instances=make_panoptic or make_coco,
            coco=make_coco,
        )
        for p in items
    ]
    tasks = [task for task in tasks if task.train_ids or task.read_instances]
    results = _run(prepare_image, tasks, workers, progress, f"prepare {split}", [1] * len(tasks))
    report.count("labelTrainIds", sum(task.train_ids for task in tasks), len(items))
    if make_coco:
        dataset = coco.build_dataset([result for result in results if result is not None])
        coco_json(root, split).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(coco_json(root, split)) as temp:
            temp.write_text(json.dumps(dataset))
    report.count("coco", int(make_coco), 1)
    if make_panoptic:
        _make_panoptic(root, split, items, workers, progress)
    report.count("panoptic", int(make_panoptic), 1)


def _train_ids_fresh(paths: Paths) -> bool:
    """The labelTrainIds PNG is newer than its polygons JSON and intact (every chunk's CRC checked, no decoding:
    a file cut short by a killed run or a full disk is made again)."""
    path = paths.gt("labelTrainIds.png")
    if mtime_ns(path) < _newest([paths.gt("polygons.json")]):
        return False
    try:
        image_size(path, verify=True)
    except DataError:
        return False
    return True


def _newest(inputs: list[Path]) -> int:
    """Newest input mtime; a missing input counts as infinitely new, so its output is redone and the error surfaces."""
    times = [mtime_ns(path) for path in inputs]
    return sys.maxsize if any(t < 0 for t in times) else max(times, default=0)


def _fresh(path: Path, section: str, key: str, items: list[Paths], newest_input: int) -> bool:
    """A prepared JSON is newer than its inputs and lists exactly the split's images (a missing one is not fresh)."""
    if mtime_ns(path) < newest_input:
        return False
    try:
        listed, _ = listed_ids(path, section, key)
    except DataError:
        return False
    return listed == {p.image_id for p in items}


def _panoptic_fresh(root: Path, split: str, items: list[Paths], newest_input: int) -> bool:
    """The panoptic JSON is fresh (`_fresh`) and every image's panoptic PNG exists."""
    fresh = _fresh(panoptic_json(root, split), "annotations", "image_id", items, newest_input)
    return fresh and all(p.panoptic_png.is_file() for p in items)


def _coco_fresh(root: Path, split: str, items: list[Paths], newest_input: int) -> bool:
    """The COCO instance JSON is fresh (`_fresh`)."""
    return _fresh(coco_json(root, split), "images", "cs_image_id", items, newest_input)


def prepare_image(task: ImageTask) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """Validate one image's inputs, write its labelTrainIds PNG, and return its COCO (image entry, annotations)."""
    paths = task.paths
    polygons = paths.gt("polygons.json")
    size = read_polygons(polygons)
    same_size(polygons, size, paths.image, image_size(paths.image, verify=True))
    if paths.gt("labelIds.png").exists():
        same_size(polygons, size, paths.gt("labelIds.png"), image_size(paths.gt("labelIds.png"), verify=False))
    if task.train_ids:
        with atomic_path(paths.gt("labelTrainIds.png")) as temp:
            json2labelImg(str(polygons), str(temp), "trainIds")
    if not task.read_instances:
        return None
    instance_ids = read_instance_ids(paths.gt("instanceIds.png"))
    same_size(polygons, size, paths.gt("instanceIds.png"), instance_ids.shape)
    if not task.coco:
        return None
    return coco.image_entry(paths.city, paths.image_id, *size), coco.instance_annotations(instance_ids)


def _make_panoptic(root: Path, split: str, items: list[Paths], workers: int, progress: ProgressCallback | None) -> None:
    """convert2panoptic over contiguous chunks of its own (sorted path) order, merged into what one run writes, then
    renamed into place: the PNG folder first, the JSON last (its mtime marks the set as complete)."""
    sources = sorted(os.path.abspath(p.gt("instanceIds.png")) for p in items)
    count = 1 if workers <= 1 else min(len(sources), workers * CHUNKS_PER_WORKER)
    bounds = np.linspace(0, len(sources), count + 1).round().astype(int).tolist()
    chunks = [sources[start:stop] for start, stop in zip(bounds, bounds[1:], strict=False)]
    with tempfile.TemporaryDirectory(prefix=f".panoptic-{split}-", dir=root / "gtFine") as temp_name:
        temp = Path(temp_name)
        jobs = [(chunk, str(temp / f"chunk{k}"), split) for k, chunk in enumerate(chunks)]
        outputs = _run(convert_panoptic_chunk, jobs, workers, progress, f"panoptic {split}", list(map(len, chunks)))
        folder = temp / panoptic_folder(root, split).name
        folder.mkdir()
        for _, workdir, _ in jobs:
            for png in (Path(workdir) / "out" / folder.name).iterdir():
                os.replace(png, folder / png.name)
        merged = {
            "images": [image for output in outputs for image in output["images"]],
            "annotations": [annotation for output in outputs for annotation in output["annotations"]],
            "categories": outputs[0]["categories"],
        }
        with open(temp / "panoptic.json", "w") as file:
            json.dump(merged, file, sort_keys=True, indent=4)  # as convert2panoptic writes it
        if panoptic_folder(root, split).exists():
            os.rename(panoptic_folder(root, split), temp / "previous")
        os.rename(folder, panoptic_folder(root, split))
        os.replace(temp / "panoptic.json", panoptic_json(root, split))


def convert_panoptic_chunk(job: tuple[list[str], str, str]) -> dict[str, Any]:
    """Run `convert2panoptic` on some instanceIds PNGs (linked into a private gtFine tree); return its JSON."""
    sources, workdir, split = job
    inputs, output = Path(workdir) / "gtFine", Path(workdir) / "out"
    output.mkdir(parents=True)
    for source in map(Path, sources):
        link = inputs / split / source.parent.name / source.name
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(source)
        except OSError:  # file systems without symlinks
            shutil.copyfile(source, link)
    with contextlib.redirect_stdout(io.StringIO()) as chatter:
        convert2panoptic(cityscapesPath=str(inputs), outputFolder=str(output), useTrainId=False, setNames=[split])
    log.debug("convert2panoptic: %s", chatter.getvalue())
    return json.loads((output / f"cityscapes_panoptic_{split}.json").read_text())


def _run(
    function: Callable[[Task], Result],
    tasks: list[Task],
    workers: int,
    progress: ProgressCallback | None,
    description: str,
    sizes: list[int],
) -> list[Result]:
    """`[function(t) for t in tasks]` in `workers` processes; after each result (in task order) reports
    `progress(description, done, total)` with the summed `sizes` (images) of the finished tasks."""
    results: list[Result] = []
    done, total = 0, sum(sizes)
    for result, size in zip(parallel_map(function, tasks, workers, processes=True), sizes, strict=True):
        results.append(result)
        done += size
        if progress is not None:
            progress(description, done, total)
    return results
