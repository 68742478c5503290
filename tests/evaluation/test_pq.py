"""evaluate_panoptic against the official cityscapesscripts evaluator on hand-made GT and adversarial predictions."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from PIL import Image

from lpsctl.data.predictions import write_panoptic, write_panoptic_json
from lpsctl.errors import DataError
from lpsctl.evaluation.pq import evaluate_panoptic
from lpsctl.evaluation.reference import evaluate_panoptic_reference
from lpsctl.imagefile import read_panoptic_png
from lpsctl.structures import PanopticPrediction

HEIGHT, WIDTH = 64, 128
STUFF_LABELS = (7, 8, 11, 17, 20, 21, 23)
THING_LABELS = (24, 25, 26, 27, 33)
EVAL_LABELS = STUFF_LABELS + THING_LABELS + (12, 13, 19, 22, 28, 31, 32)


def _instance_image(rng: np.random.Generator) -> np.ndarray:
    """A Cityscapes instanceIds map: stuff bands and boxes, void (ego vehicle, parking, caravan), things, crowds."""
    image = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    cuts = np.sort(rng.choice(np.arange(8, HEIGHT - 8), size=3, replace=False))
    for label, top, bottom in zip(rng.choice(STUFF_LABELS, 4), (0, *cuts), (*cuts, HEIGHT), strict=True):
        image[top:bottom] = label
    for label in rng.choice(STUFF_LABELS, 3):  # small stuff pieces, some under later things
        y, x = rng.integers(0, HEIGHT - 4), rng.integers(0, WIDTH - 4)
        image[y : y + rng.integers(2, 10), x : x + rng.integers(2, 12)] = label
    image[HEIGHT - rng.integers(3, 8) :, : rng.integers(20, 60)] = 1  # ego vehicle: void
    counters = dict.fromkeys(THING_LABELS + (29,), 0)
    for _ in range(rng.integers(3, 9)):
        label = int(rng.choice(THING_LABELS + (29,)))
        y, x = rng.integers(0, HEIGHT - 6), rng.integers(0, WIDTH - 6)
        image[y : y + rng.integers(3, 24), x : x + rng.integers(3, 30)] = label * 1000 + counters[label]
        counters[label] += 1
    for label in rng.choice((24, 26), rng.integers(0, 3)):  # crowd regions: thing label without instance number
        y, x = rng.integers(0, HEIGHT - 6), rng.integers(0, WIDTH - 6)
        image[y : y + rng.integers(4, 16), x : x + rng.integers(4, 20)] = label
    if rng.random() < 0.5:
        image[: rng.integers(2, 8), : rng.integers(5, 40)] = 9  # parking: ignoreInEval → void
    return image


@pytest.fixture(scope="module")
def gt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Six images converted to panoptic GT by cityscapesscripts' own convert2panoptic."""
    root = tmp_path_factory.mktemp("gt") / "gtFine"
    rng = np.random.default_rng(7)
    for index in range(6):
        city = "aachen" if index < 3 else "bonn"
        folder = root / "val" / city
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{city}_{index:06d}_000019_gtFine_instanceIds.png"
        Image.fromarray(_instance_image(rng)).save(folder / name)
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(root), str(root), setNames=["val"])
    return _load_gt(root / "cityscapes_panoptic_val.json", root / "cityscapes_panoptic_val")


def _load_gt(json_path: Path, folder: Path) -> dict:
    content = json.loads(json_path.read_text())
    images = {
        a["image_id"]: (read_panoptic_png(folder / a["file_name"]), a["segments_info"]) for a in content["annotations"]
    }
    return {"json": json_path, "folder": folder, "images": images}


# --- prediction generators: (rng, gt ids, gt segments) -> (ids, segments as {id: category_id}) ---------------------


def _identity(rng, ids, segments):
    return ids.copy(), {s["id"]: s["category_id"] for s in segments}


def _perturbed(rng, ids, segments):
    shifted = np.roll(ids, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
    noise = rng.random(ids.shape) < 0.05
    shifted[noise] = 0
    return shifted, {s["id"]: s["category_id"] for s in segments}


def _random_segments(rng, ids, segments):
    out, table = np.zeros_like(ids), {}
    for _ in range(rng.integers(0, 15)):
        segment_id = int(rng.integers(1, 256**3))  # large ids: the binary-search path
        y, x = rng.integers(0, HEIGHT - 2), rng.integers(0, WIDTH - 2)
        out[y : y + rng.integers(2, 40), x : x + rng.integers(2, 70)] = segment_id
        table[segment_id] = int(rng.choice(EVAL_LABELS))
    return out, {k: v for k, v in table.items() if (out == k).any()}


def _crowd_overlap(rng, ids, segments):
    out, table = _perturbed(rng, ids, segments)
    for crowd in [s for s in segments if s["iscrowd"]]:
        x, y, w, h = crowd["bbox"]
        for offset, category in ((0, crowd["category_id"]), (w // 2, 26 if crowd["category_id"] == 24 else 24)):
            segment_id = crowd["category_id"] * 1000 + 500 + offset
            out[y : y + h, x + offset : x + offset + w // 2 + int(rng.integers(0, 3))] = segment_id
            table[segment_id] = category
    return out, {k: v for k, v in table.items() if (out == k).any()}


def _void_overlap(rng, ids, segments):
    out, table = _identity(rng, ids, segments)
    void_rows, void_columns = np.nonzero(ids == 0)
    for number in range(4):  # segments straddling void: exactly half, just below, just above, random
        if void_rows.size == 0:
            break
        pick = rng.integers(void_rows.size)
        y, x = void_rows[pick], void_columns[pick]
        segment_id = 26000 + 900 + number
        out[max(0, y - 2) : y + 2, max(0, x - 3) : x + 3] = segment_id
        table[segment_id] = int(rng.choice(THING_LABELS))
    return out, {k: v for k, v in table.items() if (out == k).any()}


def _unmatched(rng, ids, segments):
    out, table = _perturbed(rng, ids, segments)
    out[: HEIGHT // 3, WIDTH // 2 :] = 31000
    table[31000] = 31  # train: never in this GT
    return out, {k: v for k, v in table.items() if (out == k).any()}


def _empty(rng, ids, segments):
    return np.zeros_like(ids), {}


def _swapped(rng, ids, segments):
    swap = {24: 25, 25: 24, 26: 27, 27: 26, 7: 8, 8: 7}
    return ids.copy(), {s["id"]: swap.get(s["category_id"], s["category_id"]) for s in segments}


def _fragmented(rng, ids, segments):
    out, table = ids.copy(), {s["id"]: s["category_id"] for s in segments}
    columns = np.arange(WIDTH)[None, :]
    for segment in segments:
        pieces = int(rng.integers(1, 4))
        for piece in range(1, pieces):
            x, _, w, _ = segment["bbox"]
            part = (ids == segment["id"]) & (columns >= x + piece * w // pieces)
            out[part] = segment["id"] + 100_000 * piece
            table[segment["id"] + 100_000 * piece] = segment["category_id"]
    return out, {k: v for k, v in table.items() if (out == k).any()}


def _mixed(rng, ids, segments):
    choice = (_identity, _perturbed, _random_segments, _crowd_overlap, _void_overlap, _empty, _fragmented)
    return choice[int(rng.integers(len(choice)))](rng, ids, segments)


def _write_prediction(folder: Path, gt: dict, generator: Callable, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    annotations = []
    for image_id, (ids, segments) in gt["images"].items():
        out, table = generator(rng, ids, segments)
        info = [{"id": int(k), "category_id": int(v), "iscrowd": 0} for k, v in table.items()]
        annotations.append(write_panoptic(folder, image_id, PanopticPrediction(out.astype(np.int32), info)))
    return write_panoptic_json(folder, annotations), folder / "panoptic"


CASES = {
    "identity": _identity,
    "perturbed": _perturbed,
    "random": _random_segments,
    "crowd": _crowd_overlap,
    "void": _void_overlap,
    "unmatched": _unmatched,
    "empty": _empty,
    "swapped": _swapped,
    "fragmented": _fragmented,
    "mixed": _mixed,
}


BACKENDS = ["lpsctl", "hotcoco"]  # (the dev install has hotcoco: a missing one fails these tests, never skips them)


def _compare_with_reference(gt: dict, pred_json: Path, pred_folder: Path, backend: str = "auto") -> dict:
    ours = evaluate_panoptic(gt["json"], gt["folder"], pred_json, pred_folder, backend=backend)
    reference = evaluate_panoptic_reference(gt["json"], gt["folder"], pred_json, pred_folder)
    assert ours.keys() == reference.keys() | {"absent"}  # the reference cannot tell absent classes from 0-PQ ones
    assert all(ours["per_class"][name] == {"pq": 0.0, "sq": 0.0, "rq": 0.0} for name in ours["absent"])
    assert len(ours["per_class"]) - len(ours["absent"]) == ours["All"]["n"]
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == reference[group]["n"]
        for metric in ("pq", "sq", "rq"):
            assert ours[group][metric] == pytest.approx(reference[group][metric], abs=1e-9)
    assert ours["per_class"].keys() == reference["per_class"].keys()
    for name, scores in reference["per_class"].items():
        assert ours["per_class"][name] == pytest.approx(scores, abs=1e-9), name
    return ours


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_reference(case: str, backend: str, gt: dict, tmp_path: Path) -> None:
    pred_json, pred_folder = _write_prediction(tmp_path, gt, CASES[case], seed=len(case))
    ours = _compare_with_reference(gt, pred_json, pred_folder, backend)
    if case == "identity":  # every segment but the crowds (unmatched, ignored) is a perfect TP
        assert ours["All"]["pq"] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["identity", "perturbed"])
def test_prepared_dataset_equals_reference(case: str, backend: str, prepared_root: Path, tmp_path: Path) -> None:
    """The GT the shared synthetic dataset gets from `lpsctl data prepare`."""
    folder = prepared_root / "gtFine"
    prepared = _load_gt(folder / "cityscapes_panoptic_val.json", folder / "cityscapes_panoptic_val")
    pred_json, pred_folder = _write_prediction(tmp_path, prepared, CASES[case], seed=11)
    ours = _compare_with_reference(prepared, pred_json, pred_folder, backend)
    assert ours["All"]["n"] > 0 and ours["Things"]["n"] > 0


def test_workers_give_the_same_result(gt: dict, tmp_path: Path) -> None:
    pred_json, pred_folder = _write_prediction(tmp_path, gt, _mixed, seed=3)
    serial = evaluate_panoptic(gt["json"], gt["folder"], pred_json, pred_folder)
    parallel = evaluate_panoptic(gt["json"], gt["folder"], pred_json, pred_folder, workers=2)
    assert parallel == serial  # per-image sums are added in image order either way


@pytest.mark.parametrize("backend", BACKENDS)
def test_progress_reports_every_image(gt: dict, tmp_path: Path, backend: str) -> None:
    """Image by image with lpsctl's counting; hotcoco counts them all in one call: before and after it."""
    pred_json, pred_folder = _write_prediction(tmp_path, gt, _identity, seed=0)
    calls: list[tuple[str, int, int]] = []
    evaluate_panoptic(
        gt["json"], gt["folder"], pred_json, pred_folder, progress=lambda *a: calls.append(a), backend=backend
    )
    total = len(gt["images"])
    steps = range(1, total + 1) if backend == "lpsctl" else (0, total)
    assert calls == [("PQ", done, total) for done in steps]


def test_the_workers_and_backends_agree_with_the_default(gt: dict, tmp_path: Path) -> None:
    pred_json, pred_folder = _write_prediction(tmp_path, gt, _mixed, seed=5)
    results = [
        evaluate_panoptic(gt["json"], gt["folder"], pred_json, pred_folder, backend=backend, workers=workers)
        for backend, workers in (("auto", 1), ("lpsctl", 1), ("lpsctl", 2), ("hotcoco", 2))
    ]
    assert all(result == results[0] for result in results[1:])


def _edited_prediction(tmp_path: Path, gt: dict, edit: Callable[[dict, Path], None]) -> tuple[Path, Path]:
    pred_json, pred_folder = _write_prediction(tmp_path, gt, _identity, seed=0)
    content = json.loads(pred_json.read_text())
    edit(content, pred_folder)
    pred_json.write_text(json.dumps(content))
    return pred_json, pred_folder


def _drop_image(content: dict, folder: Path) -> None:
    content["annotations"].pop(0)


def _drop_segment(content: dict, folder: Path) -> None:
    next(a for a in content["annotations"] if a["segments_info"])["segments_info"].pop()


def _extra_segment(content: dict, folder: Path) -> None:
    content["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 26, "iscrowd": 0})


def _bad_category(content: dict, folder: Path) -> None:
    content["annotations"][0]["segments_info"][0]["category_id"] = 29  # caravan: not an evaluated category


def _delete_png(content: dict, folder: Path) -> None:
    (folder / content["annotations"][0]["file_name"]).unlink()


def _grey_png(content: dict, folder: Path) -> None:
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(folder / content["annotations"][0]["file_name"])


def _palette_png(content: dict, folder: Path) -> None:
    path = folder / content["annotations"][0]["file_name"]
    Image.open(path).convert("RGB").quantize(colors=64).save(path)  # the same segments, as a palette (mode P) PNG


def _small_png(content: dict, folder: Path) -> None:
    Image.fromarray(np.zeros((HEIGHT, WIDTH // 2, 3), np.uint8)).save(folder / content["annotations"][0]["file_name"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_image, "no prediction for 1 of 6 GT images"),
        (_drop_segment, "in the PNG but not in the JSON"),
        (_extra_segment, r"\[4242\] are in the JSON but not in the PNG"),
        (_bad_category, r"unknown category ids \[29\]"),
        (_delete_png, "panoptic PNG not found"),
        (_grey_png, "must be RGB"),
        (_palette_png, "must be RGB"),  # (hotcoco would take it: left to lpsctl's evaluator, the same either way)
        (_small_png, "differs from the ground truth"),
    ],
)
def test_bad_predictions_raise_data_error(edit: Callable, message: str, gt: dict, tmp_path: Path) -> None:
    pred_json, pred_folder = _edited_prediction(tmp_path, gt, edit)
    with pytest.raises(DataError, match=message):
        evaluate_panoptic(gt["json"], gt["folder"], pred_json, pred_folder)


def test_missing_prediction_json_raises(gt: dict, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="panoptic JSON not found"):
        evaluate_panoptic(gt["json"], gt["folder"], tmp_path / "panoptic.json", tmp_path)
    with pytest.raises(DataError, match="panoptic JSON not found"):
        evaluate_panoptic_reference(gt["json"], gt["folder"], tmp_path / "panoptic.json", tmp_path)
    (tmp_path / "panoptic.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        evaluate_panoptic(gt["json"], gt["folder"], tmp_path / "panoptic.json", tmp_path)


def test_reference_errors_become_data_errors(gt: dict, tmp_path: Path) -> None:
    pred_json, pred_folder = _edited_prediction(tmp_path, gt, _drop_image)
    with pytest.raises(DataError, match="no prediction for the image"):
        evaluate_panoptic_reference(gt["json"], gt["folder"], pred_json, pred_folder)


def test_no_thing_categories_reports_zero(tmp_path: Path) -> None:
    """Where the reference divides by zero (no thing class with TP+FP+FN), n = 0 and the averages are 0."""
    ids = np.full((8, 8), 7, dtype=np.int32)
    gt_info = [{"id": 7, "category_id": 7, "area": 64, "bbox": [0, 0, 8, 8], "iscrowd": 0}]
    gt_annotation = write_panoptic(tmp_path / "gt", "a_000000_000000", PanopticPrediction(ids, gt_info))
    gt_json = write_panoptic_json(tmp_path / "gt", [gt_annotation])
    pred_annotation = write_panoptic(tmp_path / "pred", "a_000000_000000", PanopticPrediction(ids, gt_info))
    pred_json = write_panoptic_json(tmp_path / "pred", [pred_annotation])
    results = evaluate_panoptic(gt_json, tmp_path / "gt" / "panoptic", pred_json, tmp_path / "pred" / "panoptic")
    assert results["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert results["Stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert id2label[7].name in results["per_class"]


@pytest.mark.parametrize("texture", ["piecewise constant", "noise"])
def test_pair_counts_equal_a_direct_count(texture: str):
    """Both ways of counting (GT id, predicted id) pixels — over runs of one pair in reading order, or pixel by pixel
    when a map has too many runs — equal np.unique over the pixel pairs, ids missing from the keys included."""
    from lpsctl.evaluation.pq import _pair_counts

    rng = np.random.default_rng(1)
    gt = np.repeat(np.repeat(rng.choice([0, 7, 26001, 26002, 24000], (16, 32)), 8, 0), 8, 1).astype(np.int32)
    if texture == "noise":
        pred = rng.choice([0, 7, 26005, 33000, 99], gt.shape).astype(np.int32)
    else:
        pred = np.roll(gt, (3, -5), axis=(0, 1)) + np.where(np.roll(gt, (3, -5), axis=(0, 1)) > 1000, 4, 0)
        pred[40:60, 100:180] = 99  # an id the keys lack
    gt_keys, pred_keys = np.array([0, 7, 24000, 26001]), np.array(sorted({0, 7, 24000, 26005, 26006, 33000}))
    counts = _pair_counts(gt, pred, gt_keys, pred_keys)
    expected = np.zeros_like(counts)
    pairs, numbers = np.unique(np.stack([gt.ravel(), pred.ravel()]), axis=1, return_counts=True)
    for (g, p), number in zip(pairs.T, numbers, strict=True):
        row = int(np.searchsorted(gt_keys, g)) if g in gt_keys else len(gt_keys)
        column = int(np.searchsorted(pred_keys, p)) if p in pred_keys else len(pred_keys)
        expected[row, column] += number
    assert counts.dtype == np.int64 and np.array_equal(counts, expected) and counts.sum() == gt.size
