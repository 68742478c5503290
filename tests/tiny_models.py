"""Tiny checkpoints for the inference, CLI and visualisation tests, saved the way the training engine saves them.

`write_checkpoint(path, kind)`: an EfficientNet-B0 model with a light SOLOv2 head and narrow FPN. With `puppet=True`
its heads get hand-set weights, so that a fresh model behaves predictably without training:
- SOLOv2: the category branch scores only the four corner cells of every grid for one class (0.88 before maskness;
  the 3×3 conv's zero padding makes corners the largest responses) and every cell has the same kernel, so Matrix NMS
  keeps one instance per image (class car), whose mask depends on the image;
- semantic head (with `semantic_bias`): constant logits, e.g. road 1 and everything else 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lpsctl.config import Config, load_config, to_dict
from lpsctl.data.cityscapes import coco_json
from lpsctl.engine.checkpoint import save_checkpoint
from lpsctl.labels import THING_LABEL_IDS
from lpsctl.models import PanopticNet, build_model

CONFIG_FILE = Path(__file__).parents[1] / "configs" / "synthetic_eps.yaml"
TINY_OVERRIDES = (
    "model.norm=torch",
    "model.fpn_channels=64",
    "semantic.lsfe_channels=32",
    "solo.stacked_convs=1",
    "solo.head_channels=32",
    "solo.kernel_dim=32",
    "solo.mask_feature_channels=32",
    # the puppet's 20 identical corner masks decay to 0.135 × their score in Matrix NMS: only the first survives
    "solo.update_threshold=0.2",
)
PUPPET_CLASS = 2  # thing index 2 = car (label id 26)
ROAD = 0  # train id


def tiny_config(kind: str, *extra: str) -> Config:
    """`kind`: "eps" (both heads) or "solo" (`model.semantic_head=false`, as `train solo` builds it)."""
    overrides = [*TINY_OVERRIDES, *extra] + (["model.semantic_head=false"] if kind == "solo" else [])
    return load_config(CONFIG_FILE, overrides)


@torch.no_grad()
def set_puppet_weights(model: PanopticNet, *, semantic_bias: dict[int, float] | None = None, seed: int = 0) -> None:
    """Hand-set the heads (see the module docstring); `semantic_bias`: train id → constant logit (others 0)."""
    head = model.instance_head
    if head is not None:
        tower_conv, tower_norm = head.category_tower[0][0], head.category_tower[0][1]
        tower_conv.weight.zero_()
        tower_norm.bias.fill_(1.0)  # GroupNorm of a constant is its bias: the tower outputs 1 everywhere
        category = head.category_predictor
        category.weight.zero_()
        category.bias.fill_(-10.0)
        # interior cells sum 9 inputs, edges 6, corners 4: logits -13, -4 and +2 (sigmoid 0.88)
        category.weight[PUPPET_CLASS].fill_(-3.0 / category.weight.shape[1])
        category.bias[PUPPET_CLASS] = 14.0
        generator = torch.Generator().manual_seed(seed)
        head.kernel_predictor.weight.zero_()
        head.kernel_predictor.bias.copy_(torch.randn(head.kernel_predictor.bias.shape, generator=generator))
    if semantic_bias is not None and model.semantic_head is not None:
        classifier = model.semantic_head.classifier
        classifier.weight.zero_()
        classifier.bias.zero_()
        for train_id, value in semantic_bias.items():
            classifier.bias[train_id] = value


def write_checkpoint(
    path: Path, kind: str, *, puppet: bool = True, semantic_bias: dict[int, float] | None = None, extra: tuple = ()
) -> Path:
    """Save a tiny model as the training engine saves one (model, config, iteration, norm)."""
    config = tiny_config(kind, *extra)
    torch.manual_seed(0)
    model = build_model(config)
    if puppet:
        set_puppet_weights(model, semantic_bias=semantic_bias)
    state = {"model": model.state_dict(), "config": to_dict(config), "iteration": 0, "norm": model.norm_name}
    save_checkpoint(path, state)
    return path


def gt_mask_results(root: Path, split: str) -> list[dict[str, Any]]:
    """The split's non-crowd GT instances (prepared COCO JSON) as an `export-masks` file: score 1.0, RLE, ids."""
    content = json.loads(coco_json(root, split).read_text())
    cs_ids = {image["id"]: image["cs_image_id"] for image in content["images"]}
    return [
        {
            "image_id": annotation["image_id"],
            "cs_image_id": cs_ids[annotation["image_id"]],
            "category_id": annotation["category_id"],
            "segmentation": annotation["segmentation"],
            "score": 1.0,
        }
        for annotation in content["annotations"]
        if not annotation["iscrowd"] and annotation["category_id"] in THING_LABEL_IDS
    ]
