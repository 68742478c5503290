"""Running a trained model: load a checkpoint into the network it describes, predict over a dataset."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lpsctl.config import Config
from lpsctl.data.dataset import CityscapesPanoptic, collate_batch
from lpsctl.data.transforms import build_eval_transform
from lpsctl.engine.checkpoint import checkpoint_config, load_checkpoint, load_model_state
from lpsctl.engine.precision import autocast
from lpsctl.errors import CheckpointError
from lpsctl.models import PanopticNet, build_model
from lpsctl.postprocess.postprocessor import PanopticPostProcessor, build_postprocessor
from lpsctl.structures import Prediction

log = logging.getLogger(__name__)


def load_model(checkpoint: Path | str, device: torch.device, *, need: str | None = None) -> tuple[PanopticNet, Config]:
    """The network stored in `checkpoint`, in eval mode on `device`; its config comes from the checkpoint.

    need: "semantic" or "instance" when the command requires that head (a clear error names the right command).
    """
    state = load_checkpoint(checkpoint)
    config = checkpoint_config(state, checkpoint)
    # the weights come from the checkpoint: never fetch or read ImageNet weights again
    config = replace(config, model=replace(config.model, pretrained=False, backbone_weights=None))
    if need == "semantic" and not config.model.semantic_head:
        raise CheckpointError(
            f"{checkpoint} is an instance-only (train solo) model without a semantic head: fuse needs a `train eps` "
            "checkpoint; pass this one's masks with `lpsctl export-masks` and `fuse --masks`"
        )
    if need == "instance" and not config.model.instance_head:
        raise CheckpointError(
            f"{checkpoint} has no SOLOv2 head: export-masks needs a `train solo` or `train eps` model"
        )
    model = build_model(config)
    load_model_state(model, state["model"], checkpoint)
    model.eval().to(device)
    log.info("loaded %s (iteration %s, norm %s)", checkpoint, state.get("iteration"), state.get("norm"))
    return model, config


def split_dataset(config: Config, root: Path | str, split: str) -> CityscapesPanoptic:
    """The images of a split (no labels read), resized by `data.eval_scale` and normalised."""
    return CityscapesPanoptic(root, split, transform=build_eval_transform(config.data), images_only=True)


def predict(
    model: PanopticNet,
    dataset: Dataset,
    config: Config,
    device: torch.device,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: Any = None,
    postprocessor: PanopticPostProcessor | None = None,
) -> Iterator[Prediction]:
    """Predictions in dataset order (semantic logits and instances at each image's original size), by the network
    and `postprocessor` (default: the one `config` describes for this network). Precision and memory format come
    from `config.inference`."""
    if postprocessor is None:
        postprocessor = build_postprocessor(config, instance_geometry=model.instance_geometry)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=partial(collate_batch, size_divisor=config.data.size_divisor),
    )
    done, total = 0, len(dataset)  # type: ignore[arg-type]
    with torch.inference_mode():
        for batch in loader:
            images = batch.images.to(device)
            if config.inference.channels_last:
                images = images.to(memory_format=torch.channels_last)
            with autocast(config.inference.precision, device):
                outputs = model(images)
            yield from postprocessor(outputs, batch.image_sizes, batch.original_sizes, batch.image_ids)
            done += len(batch.image_ids)
            if progress is not None:
                progress("predict", done, total)
