"""mIoU from train-id PNGs against a direct per-class formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpsctl.data.predictions import semantic_pairs, write_semantic_png
from lpsctl.errors import DataError
from lpsctl.evaluation.semantic import confusion_matrix, evaluate_semantic
from lpsctl.labels import CLASS_NAMES, NUM_CLASSES

IMAGE_IDS = ("aachen_000000_000019", "aachen_000001_000019", "bonn_000000_000019")


def _direct_iou(gts: list[np.ndarray], predictions: list[np.ndarray]) -> dict[str, float | None]:
    gt, prediction = np.concatenate([g.ravel() for g in gts]), np.concatenate([p.ravel() for p in predictions])
    valid = gt != 255
    result: dict[str, float | None] = {}
    for train_id, name in enumerate(CLASS_NAMES):
        tp = np.sum(valid & (gt == train_id) & (prediction == train_id))
        fp = np.sum(valid & (gt != train_id) & (prediction == train_id))
        fn = np.sum(valid & (gt == train_id) & (prediction != train_id))
        result[name] = tp / (tp + fp + fn) if tp + fp + fn else None
    return result


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(1)
    gts, predictions = [], []
    for image_id in IMAGE_IDS:
        gt = rng.choice([*range(15), 255], size=(16, 24)).astype(np.uint8)  # classes 15-18 never in the GT
        prediction = np.where(rng.random(gt.shape) < 0.6, gt, rng.choice([*range(17), 255], size=gt.shape))
        folder = tmp_path / "root" / "gtFine" / "val" / image_id.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(folder / f"{image_id}_gtFine_labelTrainIds.png")
        write_semantic_png(tmp_path / "pred", image_id, prediction.astype(np.uint8))
        gts.append(gt)
        predictions.append(prediction.astype(np.uint8))
    return tmp_path / "root", tmp_path / "pred", gts, predictions


@pytest.mark.parametrize("workers", [1, 2])
def test_miou_equals_the_direct_formula(dataset: tuple, workers: int) -> None:
    root, prediction_dir, gts, predictions = dataset
    scores = evaluate_semantic(semantic_pairs(root, "val", prediction_dir), workers=workers)
    expected = _direct_iou(gts, predictions)
    assert scores["per_class"].keys() == expected.keys()
    for name, value in expected.items():
        assert scores["per_class"][name] == (pytest.approx(value, abs=1e-12) if value is not None else None), name
    assert scores["per_class"]["motorcycle"] is None  # neither in the GT nor predicted
    assert scores["per_class"]["train"] == 0.0  # predicted, never in the GT
    defined = [value for value in expected.values() if value is not None]
    assert scores["miou"] == pytest.approx(np.mean(defined), abs=1e-12)
    gt, prediction = np.concatenate([g.ravel() for g in gts]), np.concatenate([p.ravel() for p in predictions])
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(gt[gt != 255] == prediction[gt != 255]))


def test_perfect_prediction_and_ignored_pixels() -> None:
    gt = np.array([[0, 1, 255], [18, 18, 255]], dtype=np.uint8)
    prediction = np.array([[0, 1, 7], [18, 18, 3]], dtype=np.uint8)  # wrong only where GT is ignored
    confusion = confusion_matrix(gt, prediction)
    assert confusion.shape == (NUM_CLASSES, NUM_CLASSES + 1) and confusion.sum() == 4
    assert confusion[18, 18] == 2 and confusion[:, 7].sum() == 0


def test_errors(dataset: tuple) -> None:
    root, prediction_dir, _, _ = dataset
    with pytest.raises(DataError, match="no \\*_gtFine_labelTrainIds.png under"):
        evaluate_semantic(semantic_pairs(root, "test", prediction_dir))
    (prediction_dir / "semantic" / f"{IMAGE_IDS[1]}_labelTrainIds.png").unlink()
    with pytest.raises(DataError, match="no semantic prediction for 1 of 3 images"):
        evaluate_semantic(semantic_pairs(root, "val", prediction_dir))
    write_semantic_png(prediction_dir, IMAGE_IDS[1], np.zeros((16, 23), np.uint8))
    with pytest.raises(DataError, match="differs from the ground truth"):
        evaluate_semantic(semantic_pairs(root, "val", prediction_dir))


def test_prepared_dataset_against_itself(prepared_root: Path, tmp_path: Path) -> None:
    """The shared synthetic dataset: GT train ids as the prediction give IoU 1 for every class present."""
    files = sorted((prepared_root / "gtFine" / "val").glob("*/*_gtFine_labelTrainIds.png"))
    assert files
    for path in files:
        write_semantic_png(tmp_path, path.name.removesuffix("_gtFine_labelTrainIds.png"), np.asarray(Image.open(path)))
    scores = evaluate_semantic(semantic_pairs(prepared_root, "val", tmp_path))
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0
    assert all(value in (1.0, None) for value in scores["per_class"].values())
