"""Datasets shared by the whole suite, built once per pytest (xdist: per worker) process.

`synthetic_root`: raw synthetic Cityscapes (128×256, train 6 / val 4, seed 0); `prepared_root`: a prepared copy.
`handmade_root`: a few hand-written polygon files covering crowds, void, license plates and deleted objects.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.preparation.json2instanceImg import json2instanceImg
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize

SYNTHETIC_COUNTS = {"train": 6, "val": 4}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """One torch thread per test process: the suite runs 2 pytest workers on 2 cores, and two threads per process
    on busy cores wait on each other (a 0.3 s prediction takes 10 s)."""
    torch.set_num_threads(1)


SYNTHETIC_SIZE = (128, 256)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw synthetic dataset: images, polygons JSON, labelIds/instanceIds/color PNGs; nothing prepared."""
    root = tmp_path_factory.mktemp("synthetic") / "cityscapes"
    height, width = SYNTHETIC_SIZE
    synthesize(
        root, counts=SYNTHETIC_COUNTS, height=height, width=width, seed=0, workers=1, overwrite=False, progress=None
    )
    return root


@pytest.fixture(scope="session")
def prepared_root(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of `synthetic_root` after `prepare(workers=1)`; treat as read-only (copy it to modify)."""
    root = tmp_path_factory.mktemp("prepared") / "cityscapes"
    shutil.copytree(synthetic_root, root)
    prepare(root, splits=None, workers=1, overwrite=False, progress=None)
    return root


@pytest.fixture(scope="session")
def handmade_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw 64×128 dataset, val split of 3 images, every special label case present (see `handmade_objects`)."""
    root = tmp_path_factory.mktemp("handmade") / "cityscapes"
    write_handmade_dataset(root, "val", 3, height=64, width=128)
    return root


def _box(label: str, x0: float, y0: float, x1: float, y1: float, **extra: int) -> dict:
    return {"label": label, "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], **extra}


def handmade_objects(index: int, height: int, width: int) -> list[dict]:
    """Polygons in drawing order (later overwrite earlier), in units of a 64×128 image scaled to the size."""
    shift = 3 * index
    boxes = [
        ("sky", 0, 0, 128, 16),
        ("building", 0, 12, 70, 40),
        ("vegetation", 70, 10, 128, 40),
        ("road", 0, 40, 128, 64),
        ("sidewalk", 100, 38, 128, 58),
        ("car", 8 + shift, 28, 38 + shift, 50),
        ("car", 30 + shift, 32, 58 + shift, 52),  # overlaps and hides part of the first car
        ("license plate", 18 + shift, 44, 26 + shift, 48),  # id -1: never drawn, the car stays under it
        ("cargroup", 64, 34, 84, 48),  # a crowd: label id without instance number
        ("person", 88, 22, 94, 50),
        ("persongroup", 96, 24, 104, 50),
        ("rider", 106, 20, 112, 44),
        ("bicycle", 104, 36, 114, 50),
        ("caravan", 114, 28, 126, 40),  # an instance class ignored in evaluation: void in panoptic and COCO
        ("car", 40, 16, 60, 26, {"deleted": 1}),  # deleted: must appear nowhere
        ("ego vehicle", 0, 58, 128, 64),
        ("out of roi", 0, 0, 3, 64),
    ]
    scale_y, scale_x = height / 64, width / 128
    objects = []
    for label, x0, y0, x1, y1, *extra in boxes:
        flags = extra[0] if extra else {}
        objects.append(_box(label, x0 * scale_x, y0 * scale_y, x1 * scale_x - 1, y1 * scale_y - 1, **flags))
    return objects


def write_handmade_dataset(
    root: Path, split: str, count: int, *, height: int, width: int, city: str = "handmade"
) -> None:
    """Images + polygons JSON, with labelIds / instanceIds / color PNGs made by cityscapesscripts, as in gtFine."""
    rng = np.random.default_rng(len(split))
    for index in range(count):
        image_id = f"{city}_{0:06d}_{index:06d}"
        image_folder = root / "leftImg8bit" / split / city
        label_folder = root / "gtFine" / split / city
        image_folder.mkdir(parents=True, exist_ok=True)
        label_folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(image_folder / f"{image_id}_leftImg8bit.png")
        polygons = label_folder / f"{image_id}_gtFine_polygons.json"
        document = {"imgHeight": height, "imgWidth": width, "objects": handmade_objects(index, height, width)}
        polygons.write_text(json.dumps(document))
        json2labelImg(str(polygons), str(label_folder / f"{image_id}_gtFine_labelIds.png"), "ids")
        json2labelImg(str(polygons), str(label_folder / f"{image_id}_gtFine_color.png"), "color")
        json2instanceImg(str(polygons), str(label_folder / f"{image_id}_gtFine_instanceIds.png"), "ids")
