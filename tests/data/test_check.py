import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpsctl.data.check import check, listed_ids, problem_kinds
from lpsctl.data.cityscapes import coco_json, list_images, mtime_ns, panoptic_json
from lpsctl.data.prepare import prepare
from lpsctl.errors import DataError


@pytest.fixture
def prepared_copy(prepared_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    shutil.copytree(prepared_root, root)
    return root


def one_problem(root: Path, **kwargs) -> str:
    problems = check(root, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def test_prepared_dataset_has_no_problems(prepared_root: Path):
    assert check(prepared_root) == []
    assert check(prepared_root, splits=["val"]) == []


def test_raw_dataset_needs_prepare(synthetic_root: Path):
    problems = check(synthetic_root, splits=["val"])
    fix = f"run `lpsctl data prepare --root {synthetic_root}`"
    count = len(list_images(synthetic_root, "val"))
    assert problems == [
        f"labelTrainIds.png missing for {count} of {count} images of split val "
        f"(first: {list_images(synthetic_root, 'val')[0].gt('labelTrainIds.png')}): {fix}",
        f"panoptic JSON missing for split val: {fix}",
        f"COCO instance JSON missing for split val: {fix}",
    ]


def test_missing_root_split_and_images(tmp_path: Path, prepared_copy: Path):
    assert "lpsctl data synth --root" in one_problem(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert "no split folders" in one_problem(tmp_path / "empty")
    problem = one_problem(prepared_copy, splits=["test"])
    assert "split 'test' not found" in problem and "lpsctl data synth" in problem
    (prepared_copy / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    assert "split 'test' has no images" in one_problem(prepared_copy)


def test_missing_raw_labels_point_to_synth_or_download(prepared_copy: Path):
    paths = list_images(prepared_copy, "val")[2]
    paths.gt("polygons.json").unlink()
    paths.gt("labelIds.png").unlink()
    problems = check(prepared_copy)
    assert len(problems) == 2
    for problem, kind in zip(problems, ("polygons.json", "labelIds.png"), strict=True):
        assert problem.startswith(f"{kind} missing for 1 of ") and str(paths.gt(kind)) in problem
        assert problem.endswith("re-download gtFine, or `lpsctl data synth` for a synthetic set) or delete the image")


def test_an_image_without_its_sources_is_fixed_before_prepare(prepared_copy: Path):
    """`data prepare` stops on an image whose gtFine sources are gone, so the prepare hints say to fix them first."""
    paths = list_images(prepared_copy, "val")[1]
    for kind in ("polygons.json", "labelIds.png", "instanceIds.png", "labelTrainIds.png"):
        paths.gt(kind).unlink()
    problems = check(prepared_copy)
    assert [p.split(" ")[0] for p in problems] == [
        "polygons.json",
        "labelIds.png",
        "instanceIds.png",
        "labelTrainIds.png",
    ]
    assert problems[-1].endswith(
        f"fix the missing gtFine files above, then run `lpsctl data prepare --root {prepared_copy}`"
    )
    with pytest.raises(DataError, match="polygons.json"):  # what the hint spares the user
        prepare(prepared_copy, overwrite=True)
    assert paths.image.is_file()


def test_missing_or_stale_prepared_files_point_to_prepare(prepared_copy: Path):
    fix = f"run `lpsctl data prepare --root {prepared_copy}`"
    paths = list_images(prepared_copy, "val")[0]
    paths.panoptic_png.unlink()
    problem = one_problem(prepared_copy)
    assert "panoptic.png missing for 1 of" in problem and str(paths.panoptic_png) in problem and problem.endswith(fix)
    shutil.copy(list_images(prepared_copy, "val")[1].panoptic_png, paths.panoptic_png)
    os.utime(paths.gt("instanceIds.png"))  # now: newer than both JSONs
    problems = check(prepared_copy, quick=True)  # (the full pass also finds the copied PNG's ids unlike the JSON's)
    assert [p.split(" ")[0] for p in problems] == ["panoptic", "COCO"]
    assert all("older than the instanceIds PNGs" in p and p.endswith(fix) for p in problems)


def test_json_that_lacks_an_image_or_does_not_parse(prepared_copy: Path):
    fix = f"run `lpsctl data prepare --root {prepared_copy}`"
    document = json.loads(coco_json(prepared_copy, "train").read_text())
    dropped = document["images"].pop()
    coco_json(prepared_copy, "train").write_text(json.dumps(document))
    problem = one_problem(prepared_copy)
    assert f"lacks 1 image(s) of split train (first: {dropped['cs_image_id']})" in problem and problem.endswith(fix)
    panoptic_json(prepared_copy, "val").write_text("{")
    problems = check(prepared_copy)
    assert any(p.startswith(f"panoptic JSON {panoptic_json(prepared_copy, 'val')} is unreadable") for p in problems)


@pytest.mark.parametrize("quick", [True, False])
def test_size_mismatch_is_found(prepared_copy: Path, quick: bool):
    paths = list_images(prepared_copy, "val")[0]
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(paths.gt("labelTrainIds.png"))
    problem = one_problem(prepared_copy, quick=quick)
    assert problem.startswith(f"{paths.gt('labelTrainIds.png')}: size 8×16 differs from its image")
    assert problem.endswith(f"run `lpsctl data prepare --root {prepared_copy} --overwrite`")


@pytest.mark.parametrize("kind", ["labelIds.png", "instanceIds.png", "labelTrainIds.png", "image", "panoptic"])
def test_a_truncated_png_is_found_by_decoding_it(prepared_copy: Path, kind: str):
    """The header is intact, the pixels are gone: only the full pass (the default) finds it."""
    paths = list_images(prepared_copy, "val")[1]
    path = {"image": paths.image, "panoptic": paths.panoptic_png}.get(kind, paths.gt(kind))
    data, written = path.read_bytes(), mtime_ns(path)
    path.write_bytes(data[: len(data) // 2])
    os.utime(path, ns=(written, written))  # as old as before: only its content changed
    assert check(prepared_copy, quick=True) == []  # headers only
    problem = one_problem(prepared_copy, workers=2)
    assert f"cannot read {path}: corrupt or truncated" in problem and problem_kinds([problem]) == {"unreadable file": 1}


def test_gtfine_files_whose_image_is_gone_and_an_empty_polygons_json(prepared_copy: Path):
    first, second = list_images(prepared_copy, "val")[:2]
    first.image.unlink()
    second.gt("polygons.json").write_bytes(b"")
    problems = check(prepared_copy, splits=["val"])
    orphan = next(p for p in problems if "have no image" in p)
    assert orphan.startswith("5 gtFine files of split val have no image") and first.image_id in orphan
    assert any(f"{second.gt('polygons.json')}: not a valid polygons JSON" in p for p in problems)
    kinds = problem_kinds(problems)
    assert kinds["gtFine file without its image"] == 1 and kinds["unreadable file"] == 1


def test_panoptic_ids_must_be_the_json_segments(prepared_copy: Path):
    path = panoptic_json(prepared_copy, "val")
    data = json.loads(path.read_text())
    data["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 7, "area": 1, "bbox": [0, 0, 1, 1],
                                                    "iscrowd": 0})  # fmt: skip
    path.write_text(json.dumps(data))
    problem = one_problem(prepared_copy)
    assert "segment ids [] are not in its JSON segments and JSON segments [4242] are not in the PNG" in problem


def test_listed_ids_and_mtime_of_a_missing_file(prepared_root: Path, tmp_path: Path):
    listed, entries = listed_ids(coco_json(prepared_root, "val"), "images", "cs_image_id")
    assert listed == {p.image_id for p in list_images(prepared_root, "val")} and len(entries) == len(listed)
    (tmp_path / "other.json").write_text(json.dumps({"images": [{"id": 1}]}))
    for path in (tmp_path / "other.json", tmp_path / "missing.json"):
        with pytest.raises(DataError, match=f"{path} is unreadable"):
            listed_ids(path, "images", "cs_image_id")
    assert mtime_ns(tmp_path / "missing.json") == -1 < mtime_ns(tmp_path / "other.json")
