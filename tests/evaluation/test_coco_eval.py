"""Mask AP with the real pycocotools COCOeval: GT masks as predictions score 1, mistakes lower it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from lpsctl.errors import DataError
from lpsctl.evaluation.coco import encode_results, evaluate_masks

SIZE = 128
#: (image, category, y0, y1, x0, x1, iscrowd): small (< 32²), medium and large (> 96²) objects, one crowd
OBJECTS = [
    (1, 24, 2, 22, 2, 20, 0),
    (1, 26, 30, 80, 30, 90, 0),
    (1, 24, 100, 120, 100, 120, 1),
    (2, 26, 5, 115, 5, 120, 0),
    (2, 24, 10, 30, 100, 115, 0),
]


def _mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture()
def gt_json(tmp_path: Path) -> Path:
    images = [
        {
            "id": index,
            "file_name": f"aachen/aachen_00000{index}_000019_leftImg8bit.png",
            "height": SIZE,
            "width": SIZE,
            "cs_image_id": f"aachen_00000{index}_000019",
        }
        for index in (1, 2)
    ]
    annotations = []
    for number, (image, category, y0, y1, x0, x1, crowd) in enumerate(OBJECTS, 1):
        rle = mask_utils.encode(np.asfortranarray(_mask(y0, y1, x0, x1).astype(np.uint8)))
        segmentation = (
            {"size": rle["size"], "counts": rle["counts"].decode()}
            if crowd or number % 2
            else [[x0, y0, x1, y0, x1, y1, x0, y1]]  # a polygon, as mmdetection's converter writes most objects
        )
        annotations.append(
            {
                "id": number,
                "image_id": image,
                "category_id": category,
                "segmentation": segmentation,
                "area": (y1 - y0) * (x1 - x0),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": crowd,
            }
        )
    categories = [{"id": 24, "name": "person"}, {"id": 26, "name": "car"}, {"id": 33, "name": "bicycle"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _gt_as_results(name_of: dict[int, str | int]) -> list[dict]:
    results = []
    for image, category, y0, y1, x0, x1, crowd in OBJECTS:
        if not crowd:
            results += encode_results(name_of[image], _mask(y0, y1, x0, x1)[None], [0.9], [category])
    return results


@pytest.mark.parametrize(
    "name_of",
    [
        {1: "aachen_000001_000019", 2: "aachen_000002_000019"},  # Cityscapes image ids (cs_image_id)
        {1: 1, 2: 2},  # COCO ids
        {1: "aachen/aachen_000001_000019_leftImg8bit.png", 2: "aachen_000002_000019_leftImg8bit.png"},  # file names
    ],
)
def test_ground_truth_masks_score_one(gt_json: Path, name_of: dict, tmp_path: Path) -> None:
    scores = evaluate_masks(gt_json, _gt_as_results(name_of))
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert scores[key] == pytest.approx(1.0), key
    assert scores["per_class"] == {"person": pytest.approx(1.0), "car": pytest.approx(1.0), "bicycle": None}
    (tmp_path / "results.json").write_text(json.dumps(_gt_as_results(name_of)))
    assert evaluate_masks(gt_json, tmp_path / "results.json") == scores


def test_mistakes_lower_the_score(gt_json: Path) -> None:
    results = _gt_as_results({1: 1, 2: 2})
    results[0]["category_id"] = 26  # the small person labelled car
    # a car half the size of the GT car in image 2: IoU ≈ 0.5
    results += encode_results(2, _mask(5, 60, 5, 120)[None], [0.95], [26])
    scores = evaluate_masks(gt_json, results)
    assert scores["per_class"]["person"] < 1.0 and scores["per_class"]["car"] < 1.0
    assert scores["AP"] < 1.0 and scores["APs"] < 1.0


def test_crowd_detections_are_not_false_positives(gt_json: Path) -> None:
    results = _gt_as_results({1: 1, 2: 2}) + encode_results(1, _mask(100, 120, 100, 120)[None], [0.99], [24])
    assert evaluate_masks(gt_json, results)["AP"] == pytest.approx(1.0)


def test_no_results_give_zero(gt_json: Path) -> None:
    scores = evaluate_masks(gt_json, [])
    assert scores["AP"] == 0.0 and scores["per_class"] == {"person": 0.0, "car": 0.0, "bicycle": None}


def test_errors(gt_json: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="COCO instance JSON not found"):
        evaluate_masks(tmp_path / "missing.json", [])
    with pytest.raises(DataError, match="mask results not found"):
        evaluate_masks(gt_json, tmp_path / "missing.json")
    with pytest.raises(DataError, match="'bonn_000000_000019', which is not in"):
        evaluate_masks(gt_json, encode_results("bonn_000000_000019", _mask(0, 5, 0, 5)[None], [0.5], [24]))
    with pytest.raises(DataError, match="category_id 11, not one of"):
        evaluate_masks(gt_json, encode_results(1, _mask(0, 5, 0, 5)[None], [0.5], [11]))
    with pytest.raises(DataError, match="needs image_id, category_id, segmentation and score"):
        evaluate_masks(gt_json, [{"image_id": 1}])
    with pytest.raises(DataError, match="expected masks"):
        encode_results(1, np.zeros((5, 5), bool), [0.5], [24])


def test_prepared_dataset_ground_truth_scores_one(prepared_root: Path) -> None:
    """The COCO JSON the data helper writes: its own masks, named by Cityscapes image id, give AP 1."""
    gt_json = prepared_root / "annotations" / "instancesonly_filtered_gtFine_val.json"
    content = json.loads(gt_json.read_text())
    names = {image["id"]: image["cs_image_id"] for image in content["images"]}
    images = {image["id"]: image for image in content["images"]}
    results = []
    for annotation in content["annotations"]:
        if annotation["iscrowd"]:
            continue
        image = images[annotation["image_id"]]
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            segmentation = mask_utils.merge(mask_utils.frPyObjects(segmentation, image["height"], image["width"]))
        mask = mask_utils.decode(segmentation).astype(bool)
        results += encode_results(names[annotation["image_id"]], mask[None], [0.8], [annotation["category_id"]])
    assert results
    scores = evaluate_masks(gt_json, results)
    assert scores["AP"] == pytest.approx(1.0)
    assert all(value is None or value == pytest.approx(1.0) for value in scores["per_class"].values())


def test_hotcoco_gives_pycocotools_numbers(gt_json: Path) -> None:
    """`lpsctl eval --masks` counts with hotcoco where installed (the dev install has it): every summary number and
    every per-class AP equal to pycocotools' COCOeval on results with mistakes, false positives and crowds."""
    results = _gt_as_results({1: 1, 2: 2})
    rng = np.random.default_rng(0)
    noisy = [dict(result, score=float(rng.random())) for result in results]
    noisy[0]["category_id"] = 26  # a person labelled car
    noisy += encode_results(2, _mask(5, 60, 5, 120)[None], [0.95], [26])  # a car half the GT car's size
    noisy += encode_results(1, _mask(0, 9, 0, 9)[None], [0.9], [26])  # a false positive
    reference = evaluate_masks(gt_json, noisy, backend="pycocotools")
    assert evaluate_masks(gt_json, noisy, backend="hotcoco") == reference
    assert evaluate_masks(gt_json, noisy) == reference
    assert 0 < reference["AP"] < 1
