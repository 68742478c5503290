"""The commands end to end through `main([...])`: export-masks → COCO results, fuse → Cityscapes panoptic files that
the official evaluator reads, eval → metrics.json, the data and config commands, --help and --version."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lpsctl import __version__
from lpsctl.config import from_dict, load_config
from lpsctl.data.cityscapes import coco_json, list_images, panoptic_folder, panoptic_json
from lpsctl.evaluation.pq import evaluate_panoptic
from lpsctl.imagefile import read_panoptic_png
from lpsctl.labels import THING_LABEL_IDS
from tests.cli_runner import run_lpsctl as run
from tests.tiny_models import CONFIG_FILE, PUPPET_CLASS, ROAD, gt_mask_results, write_checkpoint

SPLIT = "val"
PUPPET_CATEGORY = THING_LABEL_IDS[PUPPET_CLASS]  # car: the class the puppet model finds


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "eps": write_checkpoint(folder / "eps.pt", "eps"),
        "eps_road": write_checkpoint(folder / "eps_road.pt", "eps", semantic_bias={ROAD: 1.0}),
        "solo": write_checkpoint(folder / "solo.pt", "solo"),
    }


@pytest.fixture(scope="module")
def exported(prepared_root: Path, checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "masks.json"
    assert run("export-masks", "--checkpoint", checkpoints["solo"], "--root", prepared_root, "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def fused(prepared_root: Path, checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The joint model's own fusion of the val split (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("fused") / "pred"
    assert run("fuse", "--checkpoint", checkpoints["eps"], "--root", prepared_root, "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def gt_masks(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gt_masks") / "gt_masks.json"
    path.write_text(json.dumps(gt_mask_results(prepared_root, SPLIT)))
    return path


@pytest.fixture(scope="module")
def fused_gt(
    prepared_root: Path, checkpoints: dict[str, Path], gt_masks: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """GT instances fused with constant semantic logits (road 1, everything else 0)."""
    out = tmp_path_factory.mktemp("fused_gt") / "pred"
    args = ("--checkpoint", checkpoints["eps_road"], "--masks", gt_masks, "--root", prepared_root, "--out", out)
    assert run("fuse", *args) == 0
    return out


def test_export_masks_is_a_coco_results_file(exported: Path, prepared_root: Path):
    results = json.loads(exported.read_text())
    gt_content = json.loads(coco_json(prepared_root, SPLIT).read_text())
    coco_ids = {image["cs_image_id"]: image["id"] for image in gt_content["images"]}
    assert len(results) == len(coco_ids)  # the puppet model finds one car per image
    for result in results:
        assert set(result) == {"image_id", "cs_image_id", "category_id", "segmentation", "score"}
        assert result["image_id"] == coco_ids[result["cs_image_id"]]
        assert 0.2 <= result["score"] <= 1.0
        assert result["segmentation"]["size"] == [128, 256]  # the original resolution
        assert mask_utils.area(result["segmentation"]) > 0
    assert {result["category_id"] for result in results} == {PUPPET_CATEGORY}
    # COCOeval on the file plus a copy of every GT instance scored below every exported mask. The copies are true
    # positives (IoU 1); the exported masks, which miss every GT instance (IoU < 0.5, checked here), false positives
    # ranked first. A class with G instances and F exported masks then has precision G / (F + G) at every recall
    # level and IoU threshold, and every instance is found.
    gt = COCO(str(coco_json(prepared_root, SPLIT)))
    for result in results:
        annotations = gt.loadAnns(gt.getAnnIds(imgIds=[result["image_id"]], catIds=[result["category_id"]]))
        rles, crowds = [gt.annToRLE(a) for a in annotations], [a["iscrowd"] for a in annotations]
        assert np.all(np.asarray(mask_utils.iou([result["segmentation"]], rles, crowds)) < 0.5)
    copies = [result | {"score": 0.1} for result in gt_mask_results(prepared_root, SPLIT)]
    false_positives = {PUPPET_CATEGORY: len(coco_ids)}  # the puppet's one car per image
    found = Counter(entry["category_id"] for entry in copies)
    expected_ap = np.mean([count / (false_positives.get(c, 0) + count) for c, count in found.items()])
    assert expected_ap < 1.0  # the false positives count
    evaluator = COCOeval(gt, gt.loadRes(json.loads(exported.read_text()) + copies), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[:3] == pytest.approx([expected_ap] * 3)  # AP, AP50, AP75
    assert evaluator.stats[8] == pytest.approx(1.0)  # AR, 100 detections per image


def test_export_masks_refuses_to_replace_a_file(exported: Path, prepared_root: Path, checkpoints, capsys):
    before = exported.read_bytes()
    assert run("export-masks", "--checkpoint", checkpoints["solo"], "--root", prepared_root, "--out", exported) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert exported.read_bytes() == before


def test_eval_masks_prints_mask_ap(exported: Path, gt_masks: Path, prepared_root: Path, tmp_path: Path, capsys):
    assert run("eval", "--masks", exported, "--root", prepared_root) == 0
    assert "Mask AP" in capsys.readouterr().out
    saved = json.loads(exported.with_suffix(".metrics.json").read_text())
    assert 0.0 <= saved["mask_ap"]["AP"] <= 1.0
    # the GT instances themselves, with the results listed in a shuffled order: perfect AP
    shuffled = json.loads(gt_masks.read_text())
    random.Random(0).shuffle(shuffled)
    (tmp_path / "shuffled.json").write_text(json.dumps(shuffled))
    assert run("eval", "--masks", tmp_path / "shuffled.json", "--root", prepared_root) == 0
    assert json.loads((tmp_path / "shuffled.metrics.json").read_text())["mask_ap"]["AP"] == pytest.approx(1.0)


def test_fuse_writes_cityscapes_panoptic_files(fused: Path, prepared_root: Path):
    image_ids = [item.image_id for item in list_images(prepared_root, SPLIT)]
    content = json.loads((fused / "panoptic.json").read_text())
    assert sorted(a["image_id"] for a in content["annotations"]) == image_ids
    assert {c["id"] for c in content["categories"]} == {
        c["id"] for c in json.loads(panoptic_json(prepared_root, SPLIT).read_text())["categories"]
    }
    assert sorted(p.name for p in (fused / "panoptic").iterdir()) == [f"{i}_panoptic.png" for i in image_ids]
    assert sorted(p.name for p in (fused / "semantic").iterdir()) == [f"{i}_labelTrainIds.png" for i in image_ids]
    things = 0
    for annotation in content["annotations"]:
        ids = read_panoptic_png(fused / "panoptic" / annotation["file_name"])
        assert ids.shape == (128, 256)
        segments = {s["id"]: s for s in annotation["segments_info"]}
        present, counts = np.unique(ids[ids > 0], return_counts=True)
        assert set(present.tolist()) == set(segments)  # every id in the PNG is listed, with its area
        assert all(segments[i]["area"] == c for i, c in zip(present.tolist(), counts.tolist(), strict=True))
        for segment_id, segment in segments.items():
            assert segment["category_id"] == (segment_id // 1000 if segment_id >= 1000 else segment_id)
        things += sum(segment_id >= 1000 for segment_id in segments)
        semantic = np.asarray(Image.open(fused / "semantic" / f"{annotation['image_id']}_labelTrainIds.png"))
        assert semantic.shape == (128, 256) and semantic.dtype == np.uint8 and semantic.max() < 19
    assert things > 0  # the puppet's cars made it into the panoptic output


@pytest.mark.parametrize("prediction", ["fused", "fused_gt"])
def test_fused_output_passes_the_official_evaluator(
    prediction: str, prepared_root: Path, tmp_path: Path, request: pytest.FixtureRequest
):
    pred = tmp_path / "pred"
    shutil.copytree(request.getfixturevalue(prediction), pred)
    official = evaluatePanoptic(
        str(panoptic_json(prepared_root, SPLIT)),
        str(panoptic_folder(prepared_root, SPLIT)),
        str(pred / "panoptic.json"),
        str(pred / "panoptic"),
        str(tmp_path / "official.json"),
    )
    assert run("eval", "--pred", pred, "--root", prepared_root, "--workers", 1) == 0
    ours = json.loads((pred / "metrics.json").read_text())
    assert run("eval", "--pred", pred, "--root", prepared_root, "--reference") == 0
    reference = json.loads((pred / "metrics.json").read_text())
    for group in ("All", "Things", "Stuff"):
        for metric in ("pq", "sq", "rq", "n"):
            assert ours[group][metric] == pytest.approx(official[group][metric], abs=1e-12)
            assert reference[group][metric] == pytest.approx(ours[group][metric], abs=1e-12)
    assert reference["per_class"].keys() == ours["per_class"].keys()
    for name, scores in ours["per_class"].items():
        assert reference["per_class"][name] == pytest.approx(scores, abs=1e-12)
    if prediction == "fused_gt":  # GT instances: the comparison is not between zeros
        assert ours["Things"]["pq"] == pytest.approx(1.0) and ours["per_class"]["road"]["pq"] > 0


def test_eval_writes_metrics_json_and_prints_tables(fused: Path, prepared_root: Path, tmp_path: Path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(fused, pred)
    assert run("eval", "--pred", pred, "--root", prepared_root) == 0
    out = capsys.readouterr().out
    assert "Panoptic quality" in out and "mIoU" in out and "car" in out
    metrics = json.loads((pred / "metrics.json").read_text())
    direct = evaluate_panoptic(
        panoptic_json(prepared_root, SPLIT),
        panoptic_folder(prepared_root, SPLIT),
        pred / "panoptic.json",
        pred / "panoptic",
    )
    for group in ("All", "Things", "Stuff"):
        assert set(metrics[group]) == {"pq", "sq", "rq", "n"}
        assert metrics[group] == direct[group]  # stored at full precision, not as the table's rounded numbers
    assert len(metrics["per_class"]) == 19 and "person" in metrics["per_class"]
    assert 0.0 <= metrics["miou"] <= 1.0
    assert metrics["miou"] == metrics["semantic"]["miou"]
    assert f"mIoU {100 * metrics['miou']:.2f}" in out


def test_fuse_never_overwrites_without_the_flag(
    fused: Path, prepared_root: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys
):
    pred = tmp_path / "pred"
    shutil.copytree(fused, pred)
    (pred / "metrics.json").write_text("{}")
    before = {p: p.read_bytes() for p in pred.rglob("*") if p.is_file()}
    args = ("fuse", "--checkpoint", checkpoints["eps"], "--root", prepared_root, "--out", pred)
    assert run(*args) == 2
    assert "already holds a prediction" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in pred.rglob("*") if p.is_file()} == before
    # a fusion threshold above every score (the puppet's are below 1): the same folder, replaced, without instances
    assert run(*args, "--overwrite", "--set", "fusion.score_threshold=1.0") == 0
    assert not (pred / "metrics.json").exists()  # the old prediction's metrics went with it
    content = json.loads((pred / "panoptic.json").read_text())
    assert all(s["id"] < 1000 for a in content["annotations"] for s in a["segments_info"])


def _gt_instances(prepared_root: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """cs image id → [(label id, bool mask)] of its non-crowd GT instances."""
    instances: dict[str, list[tuple[int, np.ndarray]]] = {}
    for result in gt_mask_results(prepared_root, SPLIT):
        mask = mask_utils.decode(result["segmentation"]).astype(bool)
        instances.setdefault(result["cs_image_id"], []).append((result["category_id"], mask))
    return instances


def test_fuse_with_gt_masks_reproduces_the_gt_instances(fused_gt: Path, prepared_root: Path):
    content = json.loads((fused_gt / "panoptic.json").read_text())
    gt_instances = _gt_instances(prepared_root)
    assert sum(len(v) for v in gt_instances.values()) > 0
    for annotation in content["annotations"]:
        ids = read_panoptic_png(fused_gt / "panoptic" / annotation["file_name"])
        expected = gt_instances.get(annotation["image_id"], [])
        assert sum(s["id"] >= 1000 for s in annotation["segments_info"]) == len(expected)
        for label_id, mask in expected:
            # with road beating every thing class in the semantic logits, each instance keeps exactly its GT mask
            segment_ids = np.unique(ids[mask])
            assert len(segment_ids) == 1 and segment_ids[0] // 1000 == label_id
            assert np.array_equal(ids == segment_ids[0], mask)
        assert set(np.unique(ids[ids < 1000]).tolist()) <= {0, 7}  # road (label id 7) or void elsewhere
    result = evaluate_panoptic(
        panoptic_json(prepared_root, SPLIT),
        panoptic_folder(prepared_root, SPLIT),
        fused_gt / "panoptic.json",
        fused_gt / "panoptic",
    )
    assert result["Things"]["pq"] == pytest.approx(1.0)


def test_fuse_pairs_masks_by_image_id_not_by_order(
    fused_gt: Path, gt_masks: Path, prepared_root: Path, checkpoints: dict[str, Path], tmp_path: Path
):
    shuffled = json.loads(gt_masks.read_text())
    random.Random(1).shuffle(shuffled)
    assert [r["cs_image_id"] for r in shuffled] != sorted(r["cs_image_id"] for r in shuffled)
    (tmp_path / "shuffled.json").write_text(json.dumps(shuffled))
    out = tmp_path / "pred"
    args = ("--checkpoint", checkpoints["eps_road"], "--masks", tmp_path / "shuffled.json", "--root", prepared_root)
    assert run("fuse", *args, "--out", out) == 0
    for png in sorted((fused_gt / "panoptic").iterdir()):
        assert np.array_equal(read_panoptic_png(out / "panoptic" / png.name), read_panoptic_png(png))


def test_fuse_rejects_masks_of_another_split(prepared_root: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys):
    (tmp_path / "train_masks.json").write_text(json.dumps(gt_mask_results(prepared_root, "train")))
    args = ("--checkpoint", checkpoints["eps_road"], "--masks", tmp_path / "train_masks.json", "--root", prepared_root)
    assert run("fuse", *args, "--out", tmp_path / "pred") == 2
    err = capsys.readouterr().err
    assert "has no masks for any image of this split" in err and "--split" in err
    assert not (tmp_path / "pred").exists()


def test_eval_pairs_masks_by_cityscapes_image_id(prepared_root: Path, tmp_path: Path, capsys):
    """The integer COCO ids of val and train overlap (both count from 1): val masks evaluated against train, or masks
    of another size, are errors that write nothing, and a metrics file records its split."""
    val = gt_mask_results(prepared_root, SPLIT)
    (tmp_path / "val.json").write_text(json.dumps(val))
    assert run("eval", "--masks", tmp_path / "val.json", "--root", prepared_root, "--split", "train") == 2
    err = capsys.readouterr().err
    assert "not in" in err and "another split" in err and "Traceback" not in err
    assert not (tmp_path / "val.metrics.json").exists()
    small = [dict(result) for result in val]
    height, width = small[0]["segmentation"]["size"]
    empty = mask_utils.encode(np.asfortranarray(np.zeros((height // 2, width // 2), dtype=np.uint8)))
    small[0]["segmentation"] = {"size": empty["size"], "counts": empty["counts"].decode()}
    (tmp_path / "small.json").write_text(json.dumps(small))
    assert run("eval", "--masks", tmp_path / "small.json", "--root", prepared_root) == 2
    assert f"are {width // 2}×{height // 2} but the image is {width}×{height}" in capsys.readouterr().err
    assert run("eval", "--masks", tmp_path / "val.json", "--root", prepared_root) == 0
    assert json.loads((tmp_path / "val.metrics.json").read_text())["split"] == SPLIT


def test_data_synth_prepare_check(tmp_path: Path, capsys):
    root = tmp_path / "cityscapes"
    assert run("data", "synth", "--root", root, "--train", 1, "--val", 1, "--height", 64, "--width", 128) == 0
    assert run("data", "check", "--root", root) == 1  # not prepared yet
    assert "labelTrainIds" in capsys.readouterr().out
    assert run("data", "prepare", "--root", root, "--workers", 1) == 0
    assert run("data", "check", "--root", root) == 0
    assert "complete, prepared dataset" in capsys.readouterr().out
    assert run("data", "synth", "--root", root) == 2  # an existing dataset is kept
    assert "error:" in capsys.readouterr().err


def test_data_synth_styles(tmp_path: Path, capsys):
    basic = ["data", "synth", "--root", tmp_path / "basic", "--train", 1, "--val", 0, "--height", 64, "--width", 128]
    assert run(*basic, "--style", "basic") == 0
    assert "1 basic images" in capsys.readouterr().out
    assert run("data", "synth", "--root", tmp_path / "other", "--style", "rural") == 2
    assert "unknown synthetic style 'rural'; choose one of: street, basic" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_config_show_prints_the_resolved_config(capsys):
    assert run("config", "show", "--config", CONFIG_FILE, "--set", "solver.lr=0.5") == 0
    shown = from_dict(yaml.safe_load(capsys.readouterr().out))
    assert shown == load_config(CONFIG_FILE, ["solver.lr=0.5"])
    assert shown.solver.lr == 0.5 and shown.model.backbone == "efficientnet-b0"


def test_help_and_version(capsys):
    assert run("--version") == 0
    assert capsys.readouterr().out.strip() == f"lpsctl {__version__}"
    assert run("--help") == 0
    out = capsys.readouterr().out
    for command in ("data", "config", "train", "export-masks", "fuse", "eval", "visualize"):
        assert command in out
    assert run("fuse", "--help") == 0
    assert "--masks" in capsys.readouterr().out


#: run in a fresh interpreter: `lpsctl --help` and every command's and group's `--help`, as a user would; prints the
#: commands, then the heavy modules imported by the end
HELP_WITHOUT_TORCH = """
import contextlib, io, json, sys
import typer
from lpsctl.cli.app import app, main

def paths(command, prefix):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():  # a group's commands
        yield from paths(sub, [*prefix, name])

helped = []
for path in paths(typer.main.get_command(app), []):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
        except SystemExit as exit_:
            assert not exit_.code, (path, exit_.code)
    assert "Usage: lpsctl" in out.getvalue(), path
    helped.append(" ".join(path))
heavy = sorted({"torch", "torchvision", "albumentations", "cv2"} & set(sys.modules))
print(json.dumps({"helped": helped, "heavy": heavy}))
"""


def test_help_starts_without_torch():
    """`lpsctl --help` and every command's `--help` should not wait for torch: the command modules import the engine
    inside the commands."""
    result = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"", "train eps", "data synth", "fuse", "eval", "demo"} <= set(report["helped"])
    assert report["heavy"] == []


def test_panoptic_table_leaves_out_absent_classes():
    from rich.console import Console

    from lpsctl.cli.evaluate import panoptic_table

    group = {"pq": 0.5, "sq": 0.8, "rq": 0.625, "n": 2}
    metrics = {
        "All": group,
        "Things": group | {"n": 1},
        "Stuff": group | {"n": 1},
        "per_class": {name: {"pq": 0.5, "sq": 0.8, "rq": 0.625} for name in ("road", "car")}
        | {name: {"pq": 0.0, "sq": 0.0, "rq": 0.0} for name in ("wall", "bus")},
        "absent": ["wall", "bus"],
    }
    console = Console(width=100, record=True)
    console.print(panoptic_table(metrics))
    text = console.export_text()
    assert "road" in text and "car" in text and "wall" not in text and "bus" not in text
    assert "2 classes with no GT/prediction hidden" in text


def test_every_command_takes_non_ascii_paths_with_spaces(prepared_root: Path, checkpoints, fused: Path, tmp_path: Path):
    """Dataset, run, prediction and output paths with accents, CJK and spaces, through the data, inference and
    evaluation commands (cityscapesscripts' evaluator included): the same files as with plain paths."""
    base = tmp_path / "données ü" / "城市 x"
    root = base / "ds é"
    shutil.copytree(prepared_root, root)
    assert run("data", "check", "--root", root) == 0
    assert run("data", "prepare", "--root", root) == 0
    pred, masks = base / "préd ü", base / "m ü.json"
    assert run("fuse", "--checkpoint", checkpoints["eps"], "--root", root, "--out", pred) == 0
    assert run("eval", "--pred", pred, "--root", root, "--reference") == 0
    assert {"All", "Things", "Stuff"} <= json.loads((pred / "metrics.json").read_text()).keys()
    for png in (fused / "panoptic").glob("*.png"):
        assert np.array_equal(read_panoptic_png(pred / "panoptic" / png.name), read_panoptic_png(png))
    assert run("export-masks", "--checkpoint", checkpoints["solo"], "--root", root, "--out", masks) == 0
    assert run("eval", "--masks", masks, "--root", root) == 0
    assert run("visualize", pred, "--images", root / "leftImg8bit" / SPLIT, "--out", base / "vis ü") == 0
    images = root / "leftImg8bit" / SPLIT
    assert run("predict", images, "--checkpoint", checkpoints["eps"], "--out", base / "p ü", "--overlay") == 0
    assert len(list((base / "p ü" / "overlays").glob("*.png"))) == len(list(images.glob("*/*.png")))
