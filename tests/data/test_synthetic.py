"""The synthetic Cityscapes-format generator: layout, labels made by cityscapesscripts, scene content, determinism,
and what it does to an existing root."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation.json2instanceImg import json2instanceImg
from cityscapesscripts.preparation.json2labelImg import json2labelImg

from lpsctl.data import synthetic
from lpsctl.data.cityscapes import Paths, list_images
from lpsctl.errors import ConfigError, DataError
from lpsctl.imagefile import read_png
from lpsctl.labels import THING_NAMES

HEIGHT, WIDTH = 128, 256
COUNTS = {"train": 9, "val": 3}


def make(root: Path, **changes) -> synthetic.SynthReport:
    arguments = {"counts": COUNTS, "height": HEIGHT, "width": WIDTH, "seed": 0, "workers": 1} | changes
    return synthetic.synthesize(root, **arguments)


def all_paths(root: Path, counts: dict[str, int] = COUNTS) -> list[tuple[str, int, Paths]]:
    return [(split, i, synthetic.image_paths(root, split, i)) for split, count in counts.items() for i in range(count)]


def files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "cityscapes"
    make(root)
    return root


def test_writes_the_cityscapes_layout(dataset: Path):
    train, val = list_images(dataset, "train"), list_images(dataset, "val")
    assert len(train) == 9 and len(val) == 3
    assert all(re.fullmatch(r"(synthcity|synthville)_\d{6}_000019", p.image_id) for p in train)
    assert all(re.fullmatch(r"synthtown_\d{6}_000019", p.image_id) for p in val)
    for paths in train + val:
        image = read_png(paths.image)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert read_png(paths.gt("labelIds.png")).shape == (HEIGHT, WIDTH)
        assert read_png(paths.gt("instanceIds.png")).dtype.kind in "iu"  # 16-bit PNG, as in Cityscapes
        assert read_png(paths.gt("color.png")).shape == (HEIGHT, WIDTH, 4)
        annotation = json.loads(paths.gt("polygons.json").read_text())
        assert (annotation["imgHeight"], annotation["imgWidth"]) == (HEIGHT, WIDTH)
        for obj in annotation["objects"]:
            points = np.array(obj["polygon"])
            assert obj["label"] in name2label or obj["label"][: -len("group")] in name2label
            assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 3 and points.dtype.kind == "i"
            assert points.min() >= 0 and points[:, 0].max() < WIDTH and points[:, 1].max() < HEIGHT
    assert json.loads((dataset / "synthetic.json").read_text()) == {
        "format": "lpsctl-synthetic", "version": synthetic.FORMAT_VERSION, "counts": COUNTS,
        "height": HEIGHT, "width": WIDTH, "seed": 0, "style": "street",
    }  # fmt: skip
    assert not [name for name in files(dataset) if ".tmp" in name]


def test_label_pngs_are_what_cityscapesscripts_makes_from_the_polygons(dataset: Path, tmp_path: Path):
    for _, _, paths in all_paths(dataset):
        polygons = str(paths.gt("polygons.json"))
        json2labelImg(polygons, str(tmp_path / "ids.png"), "ids")
        json2labelImg(polygons, str(tmp_path / "color.png"), "color")
        json2instanceImg(polygons, str(tmp_path / "instances.png"), "ids")
        for kind, made in (
            ("labelIds.png", "ids.png"),
            ("color.png", "color.png"),
            ("instanceIds.png", "instances.png"),
        ):
            np.testing.assert_array_equal(read_png(paths.gt(kind)), read_png(tmp_path / made))


def test_image_is_rendered_from_the_same_polygons(dataset: Path):
    boundary_gradients, interior_gradients = [], []
    for split, index, paths in all_paths(dataset):
        _, image, region_ids = synthetic.generate(0, split, index, HEIGHT, WIDTH)
        labels = read_png(paths.gt("labelIds.png"))
        assert (region_ids == labels).mean() >= 0.99
        np.testing.assert_array_equal(read_png(paths.image), image)
        # colour changes where the class changes: the image really shows the labelled regions
        gradient = np.abs(np.diff(image.astype(float).mean(2), axis=1))
        boundary = labels[:, 1:] != labels[:, :-1]
        boundary_gradients.append(gradient[boundary])
        interior_gradients.append(gradient[~boundary])
    assert np.concatenate(boundary_gradients).mean() > 2 * np.concatenate(interior_gradients).mean()


def test_scenes_hold_the_promised_content(dataset: Path):
    seen_labels, stuff_ids, thing_classes = Counter(), set(), set()
    instance_counts, instance_heights, crowd_pixels, repeated_class = [], [], 0, False
    for _, _, paths in all_paths(dataset):
        for obj in json.loads(paths.gt("polygons.json").read_text())["objects"]:
            seen_labels["deleted" if obj.get("deleted") else obj["label"]] += 1
        labels, instances = read_png(paths.gt("labelIds.png")), read_png(paths.gt("instanceIds.png"))
        stuff_ids |= set(np.unique(labels).tolist())
        ids = [int(v) for v in np.unique(instances) if v >= 1000]
        instance_counts.append(len(ids))
        classes = Counter(v // 1000 for v in ids)
        thing_classes |= set(classes)
        repeated_class |= max(classes.values(), default=0) >= 2
        instance_heights += [np.ptp(np.nonzero(instances == v)[0]) + 1 for v in ids]
        crowd_pixels += int(np.isin(instances, [name2label["car"].id, name2label["person"].id]).sum())
    stuff = ("road", "sidewalk", "building", "pole", "vegetation", "sky", "ego vehicle")
    assert {name2label[name].id for name in stuff} <= stuff_ids
    assert {"terrain", "traffic sign", "traffic light", "license plate", "deleted"} <= set(seen_labels)
    assert thing_classes == {name2label[name].id for name in THING_NAMES}
    assert seen_labels["cargroup"] + seen_labels["persongroup"] > 0 and crowd_pixels > 0
    assert repeated_class and max(instance_counts) <= 12 and sum(instance_counts) >= 2 * len(instance_counts)
    assert min(instance_heights) < 20 and max(instance_heights) > 40


def test_basic_style_holds_only_its_classes(tmp_path: Path):
    root = tmp_path / "basic"
    make(root, counts={"train": 8}, style="basic")
    seen_ids, things, counts = set(), Counter(), []
    for _, _, paths in all_paths(root, {"train": 8}):
        seen_ids |= set(np.unique(read_png(paths.gt("labelIds.png"))).tolist())
        ids = [int(v) for v in np.unique(read_png(paths.gt("instanceIds.png"))) if v >= 1000]
        things.update(v // 1000 for v in ids)
        counts.append(len(ids))
    allowed = ("unlabeled", "ego vehicle", "out of roi", "rectification border", "road", "sidewalk", "building",
               "vegetation", "sky", "car", "person")  # fmt: skip
    assert seen_ids <= {name2label[name].id for name in allowed}
    assert {name2label[name].id for name in ("road", "sidewalk", "building", "sky")} <= seen_ids
    assert set(things) == {name2label["car"].id, name2label["person"].id}  # no crowds: every thing is an instance
    assert min(counts) >= 1 and max(counts) <= 5
    manifest = json.loads((root / "synthetic.json").read_text())
    assert manifest["style"] == "basic"
    with pytest.raises(DataError, match=r"style basic\).*not the one asked for .*style street"):
        make(root, counts={"train": 8})


def test_manifests_from_before_styles_are_street(tmp_path: Path):
    root = tmp_path / "data"
    make(root, counts={"train": 1})
    manifest = root / "synthetic.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "style"}))
    assert make(root, counts={"train": 1}).written == 0


def test_same_seed_same_bytes_whatever_the_workers(dataset: Path, tmp_path: Path):
    make(tmp_path / "again", workers=2)
    assert files(tmp_path / "again") == files(dataset)
    make(tmp_path / "other", seed=1, counts={"train": 3})
    for _, _, paths in all_paths(tmp_path / "other", {"train": 3}):
        assert paths.image.read_bytes() != (dataset / paths.image.relative_to(tmp_path / "other")).read_bytes()


def test_rerun_reuses_complete_images_and_redoes_missing_ones(tmp_path: Path):
    root = tmp_path / "data"
    assert make(root, counts={"train": 3}).written == 3
    before = files(root)
    report = make(root, counts={"train": 3})
    assert report.written == 0 and "reused 3" in str(report) and files(root) == before
    synthetic.image_paths(root, "train", 1).gt("instanceIds.png").unlink()
    assert make(root, counts={"train": 3}).written == 1
    assert files(root) == before


def test_other_parameters_need_overwrite(tmp_path: Path):
    root = tmp_path / "data"
    make(root, counts={"train": 2})
    for changes in ({"seed": 1}, {"height": 64}, {"counts": {"train": 3}}):
        made = r"\(train 2, 128×256, seed 0, style street\)"
        with pytest.raises(DataError, match=rf"already holds a synthetic dataset {made}.*--overwrite"):
            make(root, **changes)


def test_overwrite_replaces_only_what_the_generator_owns(tmp_path: Path):
    root = tmp_path / "data"
    make(root, counts={"train": 2, "val": 1})
    (root / "notes.txt").write_text("keep me")
    (root / "annotations").mkdir()
    (root / "annotations" / "instancesonly_filtered_gtFine_val.json").write_text("{}")  # derived from old labels
    report = make(root, counts={"train": 1}, seed=3, overwrite=True)
    assert report.written == 1 and (root / "notes.txt").read_text() == "keep me"
    assert not (root / "annotations").exists() and not (root / "leftImg8bit" / "val").exists()
    assert len(list_images(root, "train")) == 1
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 3


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_root_that_is_not_synthetic_is_never_touched(tmp_path: Path, overwrite: bool):
    real = tmp_path / "cityscapes" / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"real data")
    message = "not a synthetic dataset.*even with --overwrite" if overwrite else "not a synthetic dataset"
    with pytest.raises(DataError, match=message):
        make(tmp_path / "cityscapes", overwrite=overwrite)
    assert real.read_bytes() == b"real data" and not (tmp_path / "cityscapes" / "synthetic.json").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is a file"):
        make(tmp_path / "file", overwrite=overwrite)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"height": 32}, "height must be an integer ≥ 64"),
        ({"width": 63}, "width must be an integer ≥ 64"),
        ({"counts": {"train": -1}}, "split 'train' must be an integer ≥ 0"),
        ({"counts": {"train": 0, "val": 0}}, "nothing to write"),
        ({"counts": {}}, "nothing to write"),
        ({"counts": {"extra": 2}}, "unknown split"),
        ({"workers": 0}, "workers must be"),
        ({"style": "rural"}, "unknown synthetic style 'rural'; choose one of: street, basic"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path: Path, changes: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        make(tmp_path / "data", **changes)
    assert not (tmp_path / "data").exists()


def test_progress_report_and_empty_splits(tmp_path: Path):
    calls = []
    report = make(tmp_path / "data", counts={"train": 2, "val": 0, "test": 1}, progress=lambda *a: calls.append(a))
    assert calls[0] == ("synth train", 0, 2) and ("synth train", 2, 2) in calls and calls[-1] == ("synth test", 1, 1)
    assert str(report) == f"3 street images (train 2, test 1, 128×256) in {tmp_path / 'data'}"
    assert not (tmp_path / "data" / "leftImg8bit" / "val").exists()


@pytest.mark.parametrize(("height", "width"), [(64, 64), (64, 100), (97, 200)])
def test_small_and_odd_sizes(tmp_path: Path, height: int, width: int):
    make(tmp_path / "data", counts={"train": 3}, height=height, width=width)
    for split, index, paths in all_paths(tmp_path / "data", {"train": 3}):
        labels = read_png(paths.gt("labelIds.png"))
        assert read_png(paths.image).shape == (height, width, 3) and labels.shape == (height, width)
        assert (synthetic.generate(0, split, index, height, width)[2] == labels).mean() >= 0.99
