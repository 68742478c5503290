import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from lpsctl.data import coco
from lpsctl.data.cityscapes import coco_json, list_images, panoptic_folder, panoptic_json
from lpsctl.data.prepare import prepare
from lpsctl.errors import DataError
from lpsctl.labels import COCO_THING_CATEGORIES, label_id_to_train_id_lut

THING_LABEL_IDS = {24, 25, 26, 27, 28, 31, 32, 33}


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def decode_panoptic(path: Path) -> np.ndarray:
    rgb = read(path).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def label_of(instance_ids: np.ndarray) -> np.ndarray:
    return np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)


def copy_dataset(root: Path, tmp_path: Path) -> Path:
    """A copy with every file a minute older (order kept), so an input a test writes or touches is clearly newer than
    every output (file clocks tick in milliseconds)."""
    target = tmp_path / "cityscapes"
    shutil.copytree(root, target)  # copy2 keeps mtimes
    for path in target.rglob("*"):
        mtime = path.stat().st_mtime_ns - 60 * 10**9
        os.utime(path, ns=(mtime, mtime))
    return target


def outputs(root: Path) -> dict[Path, tuple[int, bytes]]:
    """Every prepared file with its mtime and bytes."""
    files = [*root.glob("gtFine/*/*/*_labelTrainIds.png"), *root.glob("gtFine/cityscapes_panoptic_*.json")]
    files += [*root.glob("gtFine/cityscapes_panoptic_*/*.png"), *root.glob("annotations/*.json")]
    return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in files}


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*") if ".tmp" in path.name or path.name.startswith(".panoptic-")]


def touch(path: Path) -> None:
    os.utime(path)  # now: newer than every output of a `copy_dataset`


@pytest.fixture(scope="module")
def prepared_handmade(handmade_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_dataset(handmade_root, tmp_path_factory.mktemp("handmade_prepared"))
    prepare(root, splits=["val"], workers=1, overwrite=False, progress=None)
    return root


@pytest.fixture(params=["prepared_root", "prepared_handmade"])
def any_prepared(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


def test_prepare_makes_every_output_and_reports_progress(synthetic_root: Path, tmp_path: Path):
    root = copy_dataset(synthetic_root, tmp_path)
    calls: list[tuple[str, int, int]] = []
    report = prepare(root, splits=None, workers=1, overwrite=False, progress=lambda *call: calls.append(call))
    images = {split: len(list_images(root, split)) for split in ("train", "val")}
    assert report.splits == ["train", "val"] and report.images == sum(images.values())
    assert report.made == {"labelTrainIds": report.images, "panoptic": 2, "coco": 2}
    assert f"made {report.images} labelTrainIds PNGs, 2 panoptic sets, 2 COCO JSONs" in str(report)
    count = images["val"]
    assert ("prepare val", count, count) in calls and ("panoptic val", count, count) in calls
    for paths in list_images(root, "val"):  # json2labelImg trainIds = the label table applied to labelIds
        train_ids = read(paths.gt("labelTrainIds.png"))
        np.testing.assert_array_equal(train_ids, label_id_to_train_id_lut()[read(paths.gt("labelIds.png"))])


def test_panoptic_pngs_and_segments_info_agree(any_prepared: Path):
    document = json.loads(panoptic_json(any_prepared, "val").read_text())
    assert {category["id"] for category in document["categories"] if category["isthing"]} == THING_LABEL_IDS
    assert len(document["annotations"]) == len(list_images(any_prepared, "val"))
    for annotation in document["annotations"]:
        ids = decode_panoptic(panoptic_folder(any_prepared, "val") / annotation["file_name"])
        segments = {segment["id"]: segment for segment in annotation["segments_info"]}
        assert set(np.unique(ids).tolist()) - {0} == set(segments)
        for segment_id, segment in segments.items():
            ys, xs = np.nonzero(ids == segment_id)
            assert segment["area"] == len(xs)
            assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert segment["category_id"] == (segment_id // 1000 if segment_id >= 1000 else segment_id)
            assert segment["iscrowd"] == int(segment_id < 1000 and segment_id in THING_LABEL_IDS)


def test_panoptic_ids_are_the_instance_ids_with_void_left_out(any_prepared: Path):
    is_void = np.array([id2label[i].ignoreInEval if i in id2label else True for i in range(34)])
    saw_void = False
    for paths in list_images(any_prepared, "val"):
        instance_ids = read(paths.gt("instanceIds.png")).astype(np.int64)
        void = is_void[label_of(instance_ids)]  # ego vehicle, out of roi, caravan, … belong to no segment
        saw_void |= bool(void.any())
        np.testing.assert_array_equal(decode_panoptic(paths.panoptic_png), np.where(void, 0, instance_ids))
    assert saw_void


def test_coco_masks_are_exactly_the_instances_and_crowds(any_prepared: Path):
    document = json.loads(coco_json(any_prepared, "val").read_text())
    assert [(c["id"], c["name"]) for c in document["categories"]] == [
        (c["id"], c["name"]) for c in COCO_THING_CATEGORIES
    ]
    index = COCO()  # pycocotools reads it as a COCO dataset
    index.dataset = document
    with contextlib.redirect_stdout(io.StringIO()):
        index.createIndex()
    images = {image["cs_image_id"]: image for image in document["images"]}
    for paths in list_images(any_prepared, "val"):
        image = images[paths.image_id]
        assert (any_prepared / "leftImg8bit" / "val" / image["file_name"]).is_file()
        instance_ids = read(paths.gt("instanceIds.png")).astype(np.int64)
        assert (image["height"], image["width"]) == instance_ids.shape
        annotations = index.loadAnns(index.getAnnIds(imgIds=[image["id"]]))
        found: set[tuple[int, int]] = set()
        for annotation in annotations:
            mask = mask_utils.decode(annotation["segmentation"]).astype(bool)
            value = annotation["category_id"] if annotation["iscrowd"] else int(np.unique(instance_ids[mask])[0])
            np.testing.assert_array_equal(mask, instance_ids == value)
            assert annotation["area"] == mask.sum()
            assert annotation["bbox"] == mask_utils.toBbox(annotation["segmentation"]).tolist()
            found.add((value, annotation["iscrowd"]))
        present = np.unique(instance_ids)
        expected = {(v, int(v < 1000)) for v in present.tolist() if (v // 1000 if v >= 1000 else v) in THING_LABEL_IDS}
        assert found == expected


def test_handmade_data_has_crowds_in_both_formats(prepared_handmade: Path):
    crowds = [a for a in json.loads(coco_json(prepared_handmade, "val").read_text())["annotations"] if a["iscrowd"]]
    assert {a["category_id"] for a in crowds} == {24, 26}  # persongroup, cargroup
    document = json.loads(panoptic_json(prepared_handmade, "val").read_text())
    assert {s["id"] for a in document["annotations"] for s in a["segments_info"] if s["iscrowd"]} == {24, 26}


def test_official_evaluator_scores_ground_truth_at_pq_100(any_prepared: Path, tmp_path: Path):
    json_file, folder = str(panoptic_json(any_prepared, "val")), str(panoptic_folder(any_prepared, "val"))
    with contextlib.redirect_stdout(io.StringIO()):
        results = evaluatePanoptic(json_file, folder, json_file, folder, str(tmp_path / "results.json"))
    for group in ("All", "Things", "Stuff"):
        assert results[group]["n"] > 0
        assert results[group]["pq"] == pytest.approx(1.0)


def test_second_run_keeps_outputs_and_overwrite_remakes_them(prepared_root: Path, tmp_path: Path):
    root = copy_dataset(prepared_root, tmp_path)
    before = outputs(root)
    report = prepare(root, splits=None, workers=1, overwrite=False, progress=None)
    assert sum(report.made.values()) == 0 and report.up_to_date["panoptic"] == 2
    assert outputs(root) == before
    touch(next(root.glob("gtFine/val/*/*_polygons.json")))
    report = prepare(root, splits=["val"], workers=1, overwrite=False, progress=None)
    assert report.made == {"labelTrainIds": 1, "panoptic": 0, "coco": 0}
    touch(next(root.glob("gtFine/val/*/*_instanceIds.png")))
    report = prepare(root, splits=["val"], workers=1, overwrite=False, progress=None)
    assert report.made == {"labelTrainIds": 0, "panoptic": 1, "coco": 1}
    coco_json(root, "val").write_text("{}")  # newer than its inputs, but lists no image: remade
    assert prepare(root, splits=["val"], workers=1, overwrite=False, progress=None).made["coco"] == 1
    next(panoptic_folder(root, "train").glob("*.png")).unlink()
    assert prepare(root, splits=["train"], workers=1, overwrite=False, progress=None).made["panoptic"] == 1
    truncated = next(root.glob("gtFine/val/*/*_labelTrainIds.png"))  # newer than its input, but cut short
    written, data = truncated.stat().st_mtime_ns, truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    os.utime(truncated, ns=(written, written))
    assert prepare(root, splits=["val"], workers=1, overwrite=False, progress=None).made["labelTrainIds"] == 1
    contents = {path: data for path, (_, data) in before.items()}
    assert {path: data for path, (_, data) in outputs(root).items()} == contents  # remade, with the same bytes
    old = 1_000_000_000
    for path in before:
        os.utime(path, (old, old))
    report = prepare(root, splits=None, workers=1, overwrite=True, progress=None)
    assert report.made == {"labelTrainIds": report.images, "panoptic": 2, "coco": 2}
    assert all(mtime != old for mtime, _ in outputs(root).values())
    assert not leftovers(root)


def test_parallel_equals_serial_and_one_convert2panoptic_run(synthetic_root: Path, prepared_root: Path, tmp_path: Path):
    root = copy_dataset(synthetic_root, tmp_path)
    calls: list[tuple[str, int, int]] = []
    prepare(root, splits=None, workers=2, overwrite=False, progress=lambda *call: calls.append(call))
    for description in ("prepare val", "panoptic val"):  # one call per finished task, counting images
        done = [call[1] for call in calls if call[0] == description]
        assert done == sorted(done) and len(done) > 1 and done[-1] == len(list_images(root, "val"))
    parallel, serial = outputs(root), outputs(prepared_root)
    assert {p.relative_to(root) for p in parallel} == {p.relative_to(prepared_root) for p in serial}
    for path, (_, data) in parallel.items():
        assert data == serial[prepared_root / path.relative_to(root)][1], path
    single = tmp_path / "single"
    single.mkdir()
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(cityscapesPath=str(root / "gtFine"), outputFolder=str(single), setNames=["train", "val"])
    for split in ("train", "val"):
        assert (single / panoptic_json(root, split).name).read_bytes() == panoptic_json(root, split).read_bytes()
        for png in (single / panoptic_folder(root, split).name).iterdir():
            np.testing.assert_array_equal(read(png), read(panoptic_folder(root, split) / png.name))


def _edit_polygons(edit):
    def apply(paths):
        path = paths.gt("polygons.json")
        document = json.loads(path.read_text())
        edit(document)
        path.write_text(json.dumps(document))
        return path

    return apply


def _truncate(kind):
    def apply(paths):
        path = paths.image if kind == "image" else paths.gt(kind)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    return apply


def _smaller_image(paths):
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(paths.image)
    return paths.image


def _foreign_instance_id(paths):
    instance_ids = read(paths.gt("instanceIds.png")).astype(np.uint16)
    instance_ids[0, 0] = 60000  # label id 60 does not exist
    Image.fromarray(instance_ids).save(paths.gt("instanceIds.png"))
    return paths.gt("instanceIds.png")


def _not_json(paths):
    paths.gt("polygons.json").write_text("{")
    return paths.gt("polygons.json")


def _remove_instance_ids(paths):
    paths.gt("instanceIds.png").unlink()
    return None


BAD_INPUTS = {
    "unknown label": (
        _edit_polygons(lambda d: d["objects"].append({"label": "spaceship", "polygon": [[0, 0], [9, 0], [9, 9]]})),
        r"_gtFine_polygons\.json: unknown label 'spaceship' \(object \d+\)",
    ),
    "one-point polygon": (
        _edit_polygons(lambda d: d["objects"].append({"label": "car", "polygon": [[1, 1]]})),
        r"_gtFine_polygons\.json: object \d+ \('car'\) needs a polygon of at least 2",
    ),
    "polygons not JSON": (_not_json, r"_gtFine_polygons\.json: not a valid polygons JSON"),
    "polygons size": (
        _edit_polygons(lambda d: d.update(imgHeight=d["imgHeight"] + 1)),
        r"_leftImg8bit\.png: size \d+×\d+ \(height×width\) differs from \d+×\d+ in .*_polygons\.json",
    ),
    "image size": (_smaller_image, r"_leftImg8bit\.png: size 64×128 \(height×width\) differs"),
    "truncated image": (_truncate("image"), r"cannot read .*_leftImg8bit\.png: corrupt or truncated"),
    "truncated instanceIds": (_truncate("instanceIds.png"), r"cannot read .*_instanceIds\.png: corrupt or truncated"),
    "foreign instance id": (_foreign_instance_id, r"_instanceIds\.png: values \[60000\] are not Cityscapes ids"),
    "missing instanceIds": (_remove_instance_ids, r"file not found: .*_instanceIds\.png \(run `lpsctl data synth`"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_file_and_damages_nothing(prepared_root: Path, tmp_path: Path, case: str):
    root = copy_dataset(prepared_root, tmp_path)
    before = outputs(root)
    damage, message = BAD_INPUTS[case]
    changed = damage(list_images(root, "val")[1])
    if changed is not None:
        touch(changed)  # newer than every output: they are all due to be remade
    workers = 2 if case == "truncated instanceIds" else 1
    with pytest.raises(DataError, match=message):
        prepare(root, splits=None, workers=workers, overwrite=False, progress=None)
    assert outputs(root) == before
    assert not leftovers(root)


def test_bad_root_and_splits(prepared_root: Path, tmp_path: Path):
    with pytest.raises(DataError, match="dataset root not found: .*lpsctl data synth"):
        prepare(tmp_path / "missing", splits=None, workers=1, overwrite=False, progress=None)
    with pytest.raises(DataError, match="no split folders in"):
        prepare(tmp_path, splits=None, workers=1, overwrite=False, progress=None)
    root = copy_dataset(prepared_root, tmp_path)
    with pytest.raises(DataError, match="split 'test' not found"):
        prepare(root, splits=["test"], workers=1, overwrite=False, progress=None)
    (root / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    with pytest.raises(DataError, match="split 'test' has no images"):
        prepare(root, splits=None, workers=1, overwrite=False, progress=None)


def test_deleted_objects_and_group_labels_are_accepted(handmade_root: Path, tmp_path: Path):
    root = copy_dataset(handmade_root, tmp_path)
    paths = list_images(root, "val")[0]
    _edit_polygons(lambda d: d["objects"].append({"label": "spaceship", "polygon": [[0, 0]], "deleted": 1}))(paths)
    report = prepare(root, splits=None, workers=1, overwrite=False, progress=None)
    assert report.made["labelTrainIds"] == 3  # the handmade polygons hold cargroup and persongroup


def test_coco_annotations_of_a_small_id_map():
    instance_ids = np.array([[7, 26000, 26000, 0], [26, 26, 24001, 1], [29000, 1, 33000, 33000]])
    annotations = coco.instance_annotations(instance_ids)
    summary = [(a["category_id"], a["iscrowd"], a["area"], a["bbox"]) for a in annotations]
    assert summary == [
        (26, 1, 2, [0.0, 1.0, 2.0, 1.0]),
        (24, 0, 1, [2.0, 1.0, 1.0, 1.0]),
        (26, 0, 2, [1.0, 0.0, 2.0, 1.0]),
        (33, 0, 2, [2.0, 2.0, 2.0, 1.0]),
    ]
    assert all(isinstance(a["segmentation"]["counts"], str) for a in annotations)
    assert coco.instance_annotations(np.full((4, 5), 7)) == []  # stuff only: no annotation
    assert coco.instance_annotations(np.zeros((0, 0), dtype=np.int32)) == []
    dataset = coco.build_dataset(
        [
            (coco.image_entry("c", "c_000000_000001", 3, 4), annotations),
            (coco.image_entry("c", "c_000000_000002", 3, 4), []),
        ]
    )
    assert [i["id"] for i in dataset["images"]] == [1, 2] and [a["id"] for a in dataset["annotations"]] == [1, 2, 3, 4]
    assert dataset["images"][0]["file_name"] == "c/c_000000_000001_leftImg8bit.png"
    assert coco.build_dataset([])["annotations"] == []
