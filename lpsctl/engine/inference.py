"""Running a trained model: load a checkpoint into the network it describes, predict over a dataset."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lpsctl.config import Config, apply_override
from lpsctl.data.dataset import CityscapesPanoptic, collate_batch
from lpsctl.data.transforms import build_eval_transform, decode_sizes
from lpsctl.engine.checkpoint import checkpoint_config, load_checkpoint, load_model_state
from lpsctl.engine.deploy import TorchNetwork
from lpsctl.errors import CheckpointError, ConfigError
from lpsctl.models import PanopticNet, build_model
from lpsctl.models.fold import fold_norms
from lpsctl.postprocess.postprocessor import PanopticPostProcessor, build_postprocessor
from lpsctl.structures import Prediction

log = logging.getLogger(__name__)


#: config sections an inference command may override (the network itself is the checkpoint's)
RUNTIME_SECTIONS = ("fusion", "inference")
#: and the instance heads' decoding settings, which change no weight
RUNTIME_KEYS = (
    *(f"solo.{key}" for key in ("score_threshold", "mask_threshold", "nms_pre", "update_threshold")),
    *(f"solo.{key}" for key in ("max_per_image", "nms_kernel", "nms_sigma")),
    *(f"maskrcnn.{key}" for key in ("score_threshold", "nms_threshold", "max_per_image", "mask_threshold")),
    *(f"maskrcnn.{key}" for key in ("rpn_pre_nms_test", "rpn_post_nms_test")),
    "data.eval_scale",
    "data.eval_max_size",
)


def load_model(
    checkpoint: Path | str, device: torch.device, *, need: str | None = None, overrides: Sequence[str] = ()
) -> tuple[PanopticNet, Config]:
    """The network stored in `checkpoint`, in eval mode on `device`, norms folded into convolutions when
    `inference.fold_norms`; its config comes from the checkpoint, with `fusion.*`/`inference.*` `overrides`.

    need: "semantic" or "instance" when the command requires that head (a clear error names the right command).
    """
    state = load_checkpoint(checkpoint)
    config = runtime_overrides(checkpoint_config(state, checkpoint), overrides)
    # the weights come from the checkpoint: never fetch or read ImageNet weights again
    config = replace(config, model=replace(config.model, pretrained=False, backbone_weights=None))
    if need == "semantic" and not config.model.semantic_head:
        raise CheckpointError(
            f"{checkpoint} is an instance-only (train solo) model without a semantic head: this command needs a "
            "`train eps` checkpoint; to fuse this one's masks, export them (`lpsctl export-masks`) and pass them to "
            "`fuse --masks`"
        )
    if need == "instance" and config.model.instance_head == "none":
        raise CheckpointError(
            f"{checkpoint} has no instance head: export-masks needs a `train solo` or `train eps` model"
        )
    model = build_model(config)
    load_model_state(model, state["model"], checkpoint)
    model.eval().to(device)
    folded = fold_norms(model) if config.inference.fold_norms else 0
    log.info(
        "loaded %s (iteration %s, norm %s, %d norms folded)",
        checkpoint,
        state.get("iteration"),
        state.get("norm"),
        folded,
    )
    return model, config


def runtime_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """`config` with `section.key=value` overrides of the RUNTIME_SECTIONS and RUNTIME_KEYS (ConfigError for any
    other key)."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not key.startswith(tuple(f"{section}." for section in RUNTIME_SECTIONS)) and key not in RUNTIME_KEYS:
            raise ConfigError(
                f"--set {item}: this command takes only fusion.*, inference.*, data.eval_scale, data.eval_max_size "
                "and the decoding thresholds solo.score_threshold, maskrcnn.score_threshold, … (the network is the "
                "checkpoint's)"
            )
        config = apply_override(config, item)
    return config


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
    shrink_large: bool = False,
) -> Iterator[Prediction]:
    """Predictions in dataset order (semantic logits and instances at each image's original size), by the network
    and `postprocessor` (default: the one `config` describes for this network). Precision and memory format come
    from `config.inference`. `shrink_large`: an image larger than `data.eval_max_size` is decoded at the size the
    network saw (a caller that needs the original size upsamples what it draws or writes: `resize_nearest`)."""
    if postprocessor is None:
        postprocessor = build_postprocessor(config, instance_geometry=model.instance_geometry)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=partial(collate_batch, size_divisor=config.data.size_divisor),
    )
    network = TorchNetwork(model, config, device)
    done, total = 0, len(dataset)  # type: ignore[arg-type]
    with torch.inference_mode():
        for batch in loader:
            outputs = network(batch.images)
            sizes = decode_sizes(batch, config.data) if shrink_large else batch.original_sizes
            yield from postprocessor(outputs, batch.image_sizes, sizes, batch.image_ids)
            done += len(batch.image_ids)
            if progress is not None:
                progress("predict", done, total)
