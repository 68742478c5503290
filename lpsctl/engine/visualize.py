"""Overlays for `lpsctl visualize`: run a model on images and draw, or draw an existing prediction folder."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lpsctl.atomic import write_bytes_atomic
from lpsctl.data.cityscapes import IMAGE_SUFFIX
from lpsctl.data.dataset import ImageFolderDataset
from lpsctl.data.predictions import PANOPTIC_FOLDER, PANOPTIC_JSON, resize_nearest
from lpsctl.data.transforms import build_eval_transform
from lpsctl.engine.fuse import empty_instances, fuse_one
from lpsctl.engine.inference import load_model, predict
from lpsctl.errors import DataError
from lpsctl.imagefile import read_panoptic_png, read_rgb
from lpsctl.jsonfile import read_panoptic_json
from lpsctl.structures import ProgressCallback
from lpsctl.visualize import color_panoptic, draw_overlay

log = logging.getLogger(__name__)


def overlay_predictions(
    paths: Sequence[Path],
    checkpoint: Path,
    out: Path,
    device: torch.device,
    side_by_side: bool = False,
    progress: ProgressCallback | None = None,
    *,
    overrides: Sequence[str] = (),
) -> list[Path]:
    """Run the joint model on each image, fuse, and write `out/{stem}_overlay.png` (same size as the input; an image
    above `data.eval_max_size` is run and fused smaller, then drawn at its own size). `overrides`: runtime `--set`s."""
    model, config = load_model(checkpoint, device, need="semantic", overrides=overrides)
    dataset = ImageFolderDataset(paths, transform=build_eval_transform(config.data))
    written = []
    predictions = predict(model, dataset, config, device, progress=progress, shrink_large=True)
    for path, prediction in zip(dataset.paths, predictions, strict=True):
        assert prediction.semantic_logits is not None  # load_model(need="semantic") guarantees the head
        # a semantic-only model (model.instance_head=none): stuff is drawn, thing pixels stay void
        instances = (
            prediction.instances
            if prediction.instances is not None
            else empty_instances(*prediction.semantic_logits.shape[-2:])
        )
        panoptic = fuse_one(prediction.semantic_logits, instances, config.fusion)
        image = read_rgb(path)
        ids = resize_nearest(panoptic.ids, image.shape[:2])  # (an image above data.eval_max_size was decoded smaller)
        written.append(_write(out / f"{path.stem}_overlay.png", draw_overlay(image, ids, side_by_side=side_by_side)))
    return written


def render_prediction_folder(
    pred_dir: Path, out: Path, *, images: Path | None = None, side_by_side: bool = False, limit: int | None = None
) -> list[Path]:
    """Draw every image (the first `limit`) of a prediction folder; on its input image when `images` (a folder
    searched recursively, e.g. `data/cityscapes/leftImg8bit/val`) holds it, else the colours alone."""
    content = read_panoptic_json(pred_dir / PANOPTIC_JSON)
    if images is not None and not images.is_dir():
        raise DataError(f"--images {images}: folder not found")
    index = {p.name[: -len(IMAGE_SUFFIX)]: p for p in images.rglob(f"*{IMAGE_SUFFIX}")} if images else {}
    if images is not None:
        index |= {p.stem: p for p in images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"}}
    written = []
    for annotation in content["annotations"][:limit]:
        ids = read_panoptic_png(pred_dir / PANOPTIC_FOLDER / annotation["file_name"])
        image_id = annotation["image_id"]
        if image_id in index:
            image = read_rgb(index[image_id])
            if image.shape[:2] != ids.shape:
                raise DataError(
                    f"{index[image_id]} is {image.shape[1]}×{image.shape[0]}, its prediction "
                    f"{annotation['file_name']} is {ids.shape[1]}×{ids.shape[0]}: "
                    "--images must hold the images that were predicted"
                )
            picture = draw_overlay(image, ids, side_by_side=side_by_side)
        else:
            if images is not None:
                log.warning("no image for %s under %s: drawing the segment colours alone", image_id, images)
            picture = draw_overlay(color_panoptic(ids)[0], ids, alpha=0.0)
        written.append(_write(out / f"{image_id}_overlay.png", picture))
    return written


def _write(path: Path, picture: np.ndarray) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
    return path
