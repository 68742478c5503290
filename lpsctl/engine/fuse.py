"""`fuse` (SPEC §3.6): semantic logits + SOLOv2 instances (live, or exported masks keyed by image id) → Cityscapes
panoptic files."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from lpsctl.config import FusionConfig
from lpsctl.data.predictions import (
    PANOPTIC_FOLDER,
    PANOPTIC_JSON,
    SEMANTIC_FOLDER,
    write_panoptic,
    write_panoptic_json,
    write_semantic_png,
)
from lpsctl.errors import DataError, LpsctlError
from lpsctl.postprocess.fusion import panoptic_fusion
from lpsctl.structures import Instances, PanopticPrediction, Prediction

log = logging.getLogger(__name__)


def check_output(out_dir: Path, *, overwrite: bool) -> list[Path]:
    """The parts of an earlier prediction in `out_dir`, to be removed before writing a new one.

    LpsctlError when `out_dir` is a file, or holds a complete prediction (`panoptic.json`, written last) and not
    `overwrite`; commands call this before the slow part. PNG folders without `panoptic.json` are the leftovers of
    an interrupted or failed run and are replaced without asking."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LpsctlError(f"--out {out_dir} is a file: give a folder for the prediction")
    if (out_dir / PANOPTIC_JSON).exists() and not overwrite:
        raise LpsctlError(f"{out_dir} already holds a prediction ({PANOPTIC_JSON}): pass --overwrite or another --out")
    # metrics.json (from `lpsctl eval`) describes the old prediction: it goes with it
    parts = (PANOPTIC_JSON, PANOPTIC_FOLDER, SEMANTIC_FOLDER, "metrics.json")
    return [out_dir / name for name in parts if (out_dir / name).exists()]


def prepare_output(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse to mix with an earlier result unless `overwrite`; then start from an empty prediction folder."""
    for path in check_output(out_dir, overwrite=overwrite):
        log.info("removing %s from an earlier prediction", path)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def fuse_predictions(
    predictions: Iterable[Prediction],
    out_dir: Path,
    fusion: FusionConfig,
    *,
    masks: dict[str, Instances] | None = None,
) -> Path:
    """Fuse each prediction and write `panoptic/*.png`, `semantic/*.png` and, last, `panoptic.json` (its presence
    marks a complete result). `masks`: exported instances by image id, used instead of the model's own."""
    annotations = []
    for prediction in predictions:
        if prediction.semantic_logits is None:
            raise LpsctlError("fusion needs semantic logits: use a `train eps` checkpoint")
        instances = _instances_for(prediction, masks)
        panoptic = fuse_one(prediction.semantic_logits, instances, fusion)
        annotations.append(write_panoptic(out_dir, prediction.image_id, panoptic))
        semantic = prediction.semantic_logits.argmax(0).to("cpu", dtype=torch.uint8).numpy()
        write_semantic_png(out_dir, prediction.image_id, semantic)
    return write_panoptic_json(out_dir, annotations)


def fuse_one(semantic_logits: torch.Tensor, instances: Instances, fusion: FusionConfig) -> PanopticPrediction:
    """SPEC §3.6 fusion with the config's thresholds, on the logits' device."""
    device = semantic_logits.device
    on_device = Instances(
        masks=instances.masks.to(device),
        scores=instances.scores.to(device),
        classes=instances.classes.to(device),
        mask_logits=None if instances.mask_logits is None else instances.mask_logits.to(device),
        boxes=None if instances.boxes is None else instances.boxes.to(device),
    )
    return panoptic_fusion(
        semantic_logits,
        on_device,
        score_threshold=fusion.score_threshold,
        overlap_threshold=fusion.overlap_threshold,
        stuff_area=fusion.stuff_area,
        reference_area=fusion.reference_area,
        logit_scale=fusion.logit_scale,
    )


def _instances_for(prediction: Prediction, masks: dict[str, Instances] | None) -> Instances:
    if masks is None:
        if prediction.instances is None:
            raise LpsctlError("the model has no instance head: pass exported masks with --masks")
        return prediction.instances
    assert prediction.semantic_logits is not None
    size = tuple(prediction.semantic_logits.shape[-2:])
    if prediction.image_id not in masks:
        # a COCO results file lists instances only: an image without entries had no detections
        return empty_instances(*size)
    exported = masks[prediction.image_id]
    if tuple(exported.masks.shape[-2:]) != size:
        raise DataError(
            f"the exported masks of {prediction.image_id} are {exported.masks.shape[-1]}×{exported.masks.shape[-2]} "
            f"but the image is {size[1]}×{size[0]}: export the masks from the same images with `lpsctl export-masks`"
        )
    return exported


def empty_instances(height: int, width: int) -> Instances:
    """No instances in an image of height × width (masks Tensor[0, H, W])."""
    return Instances(
        masks=torch.zeros(0, height, width, dtype=torch.bool),
        scores=torch.zeros(0),
        classes=torch.zeros(0, dtype=torch.int64),
    )


def check_masks_cover(masks: dict[str, Instances], image_ids: list[str], source: Path) -> None:
    """A masks file that shares no image id with the split is the wrong file (pairing is by id, never by order)."""
    if masks and not set(masks) & set(image_ids):
        example = next(iter(masks))
        raise DataError(
            f"{source} has no masks for any image of this split (it has e.g. {example}, the split e.g. "
            f"{image_ids[0]}): export masks for this split with `lpsctl export-masks --split …`"
        )
