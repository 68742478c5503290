"""Semantic segmentation metrics (mIoU over the 19 Cityscapes train ids, 255 ignored) from train-id PNGs.

Ground truth is cityscapesscripts' `gtFine/{split}/{city}/{image_id}_gtFine_labelTrainIds.png`; the caller pairs each
with its prediction (`lpsctl.data.predictions.semantic_pairs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpsctl.errors import DataError
from lpsctl.imagefile import read_png
from lpsctl.labels import CLASS_NAMES, NUM_CLASSES
from lpsctl.parallel import parallel_map


def confusion_matrix(gt: np.ndarray, prediction: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """int64[C, C + 1]: rows GT class, columns predicted class; the last column counts predictions outside 0..C-1
    (e.g. 255), which are wrong for every GT class. GT pixels outside 0..C-1 (255 = ignore) are left out."""
    if gt.shape != prediction.shape:
        raise DataError(f"prediction size {prediction.shape} differs from the ground truth's {gt.shape}")
    gt = gt.astype(np.int64, copy=False).ravel()
    prediction = prediction.astype(np.int64, copy=False).ravel()
    valid = (gt >= 0) & (gt < num_classes)
    predicted = np.where((prediction >= 0) & (prediction < num_classes), prediction, num_classes)
    counts = np.bincount(gt[valid] * (num_classes + 1) + predicted[valid], minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def scores_from_confusion(confusion: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """{"miou", "pixel_accuracy", "per_class": {name: IoU or None}}; IoU_c = TP / (TP + FP + FN), None (and left out
    of the mean) for a class that is neither in the GT nor predicted."""
    num_classes = confusion.shape[0]
    true_positives = np.diag(confusion[:, :num_classes]).astype(np.float64)
    denominator = confusion.sum(1) + confusion[:, :num_classes].sum(0) - true_positives
    per_class: dict[str, float | None] = {
        name: float(tp / total) if total > 0 else None
        for name, tp, total in zip(class_names, true_positives, denominator, strict=True)
    }
    defined = [value for value in per_class.values() if value is not None]
    total = confusion.sum()
    return {
        "miou": float(np.mean(defined)) if defined else 0.0,
        "pixel_accuracy": float(true_positives.sum() / total) if total else 0.0,
        "per_class": per_class,
    }


def evaluate_semantic(
    pairs: Sequence[tuple[Path, Path]],
    *,
    workers: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """mIoU of (ground truth, prediction) pairs of uint8 train-id PNGs (255 = void).

    Each prediction must have its ground truth's size (DataError otherwise). Returns `scores_from_confusion`'s dict.
    """
    if not pairs:
        raise DataError("no images to evaluate the semantic segmentation of")
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    # processes: libspng (pyspng) decodes holding the GIL
    for done, image_confusion in enumerate(parallel_map(_image_confusion, pairs, workers, processes=True), 1):
        confusion += image_confusion
        if progress is not None:
            progress("mIoU", done, len(pairs))
    return scores_from_confusion(confusion)


def _image_confusion(pair: tuple[Path, Path]) -> np.ndarray:
    gt_path, prediction_path = pair
    gt, prediction = read_png(gt_path), read_png(prediction_path)
    if prediction.ndim != 2:
        raise DataError(f"{prediction_path}: expected a single-channel train-id PNG, got shape {prediction.shape}")
    try:
        return confusion_matrix(gt, prediction)
    except DataError as error:
        raise DataError(f"{prediction_path}: {error}") from None
