"""The SOLOv2 criterion and post-processor of a `SoloConfig`, built as the engine builds them (for head-level tests)."""

from __future__ import annotations

from torch import Tensor

from lpsctl.config import Config, SoloConfig
from lpsctl.losses.criterion import build_criterion
from lpsctl.models.solov2 import solo_geometry as geometry_of
from lpsctl.postprocess.postprocessor import build_postprocessor
from lpsctl.structures import Instances, SoloGeometry, SoloOutputs


def solo_geometry(cfg: SoloConfig) -> SoloGeometry:
    """The geometry a SOLOv2Head built from `cfg` reports."""
    return geometry_of(cfg.grids, cfg.scale_ranges)


def solov2_loss(
    outputs: SoloOutputs, masks: list[Tensor], classes: list[Tensor], ignore: Tensor | None, cfg: SoloConfig
) -> dict[str, Tensor]:
    criterion = build_criterion(Config(solo=cfg), semantic=False, instance_geometry=solo_geometry(cfg))
    assert criterion.instance is not None
    return criterion.instance(outputs, masks, classes, ignore)


def decode_solov2(
    outputs: SoloOutputs, image_sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]], cfg: SoloConfig
) -> list[Instances]:
    postprocessor = build_postprocessor(Config(solo=cfg), instance_geometry=solo_geometry(cfg))
    assert postprocessor.instance is not None
    return postprocessor.instance(outputs, image_sizes, original_sizes)
