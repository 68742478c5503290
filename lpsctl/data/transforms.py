"""Training and evaluation transforms (SPEC §3.7 recipe): albumentations 2 applied to an image and its label maps at
once, so that scale jitter, crop and flip share one geometry. Label maps are nearest-resized, the image bilinearly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import albumentations as A
import cv2
import numpy as np

from lpsctl.config import DataConfig
from lpsctl.errors import ConfigError
from lpsctl.labels import IGNORE
from lpsctl.structures import Batch

# Colour jitter strengths. SPEC is silent; these are the magnitudes of mmsegmentation's PhotoMetricDistortion
# (brightness ±32/255 ≈ 0.125, contrast and saturation 0.5-1.5, hue ±18° ≈ 0.05 of the circle), applied half the time.
BRIGHTNESS = 0.125
CONTRAST = 0.5
SATURATION = 0.5
HUE = 0.05
PHOTOMETRIC_PROB = 0.5

# channels of the packed uint8 label mask that travels through albumentations next to the int32 instance map
_SEMANTIC, _IGNORE, _INSIDE = 0, 1, 2


class Transformed(NamedTuple):
    """The output of a `PanopticTransform`, all of the same (height, width).

    image: float32[H, W, 3] normalised, exactly 0 in padding. semantic: uint8[H, W] train ids, 255 in padding.
    instances: int32[H, W] instance map (0 = no instance, also in padding). ignore: bool[H, W], True in padding.
    """

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    ignore: np.ndarray


class PanopticTransform:
    """One albumentations pipeline applied to an RGB image, its semantic map, its instance map and its ignore map.

    All label maps are padded with 0 inside albumentations together with an "inside the image" channel; padding
    values (image 0 after normalisation, semantic 255, ignore True, instance 0) are written afterwards from that
    channel, so they are exact whatever the colour jitter does to the padded pixels.

    Randomness: albumentations 2 draws from per-transform generators, not from torch. `set_random_seed` reseeds
    them; `CityscapesPanoptic.__getitem__` calls it with a seed drawn from torch's RNG, which the DataLoader seeds per
    worker and per epoch, so augmentations are reproducible under `torch.manual_seed` with any number of workers.
    """

    def __init__(
        self,
        transforms: Sequence[A.BasicTransform],
        *,
        random: bool,
        trim_padding: bool = False,
        shrink_to: tuple[float, int] | None = None,
    ) -> None:
        self.pipeline = A.Compose(list(transforms), additional_targets={"instances": "mask"}, seed=0)
        self.random = random  # False: deterministic, no seed needed (and torch's RNG is left untouched)
        # True: cut the bottom/right padding a crop larger than the scaled image got (batches pad to size_divisor)
        self.trim_padding = trim_padding
        # (scale, max_size): an image whose longer side × scale exceeds max_size is first shrunk so that it does not
        self.shrink_to = shrink_to

    def set_random_seed(self, seed: int) -> None:
        # Compose.set_random_seed hands the *same* seed to every transform, so their first draws coincide (a flip
        # would always come with a colour jitter); give each transform its own stream instead
        self.pipeline.set_random_seed(seed)
        states = np.random.SeedSequence(seed).generate_state(len(self.pipeline.transforms))
        for transform, state in zip(self.pipeline.transforms, states, strict=True):
            transform.set_random_seed(int(state))

    def __call__(
        self, image: np.ndarray, semantic: np.ndarray, instances: np.ndarray, ignore: np.ndarray
    ) -> Transformed:
        """image: uint8[H, W, 3] RGB 0-255. semantic: uint8[H, W] train ids (255 ignore). instances: int32[H, W]
        (0 = none). ignore: bool[H, W] (crowd). Returns the transformed maps, see `Transformed`."""
        factor = shrink_factor(image.shape[:2], *self.shrink_to) if self.shrink_to else 1.0
        if factor < 1.0:
            size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))  # (width, height)
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            semantic, instances, ignore = (
                cv2.resize(np.asarray(m), size, interpolation=cv2.INTER_NEAREST_EXACT)
                for m in (semantic.astype(np.uint8), np.asarray(instances, dtype=np.int32), ignore.astype(np.uint8))
            )
            ignore = ignore.astype(bool)
        inside = np.ones(semantic.shape, dtype=np.uint8)
        packed = np.stack([semantic.astype(np.uint8), ignore.astype(np.uint8), inside], axis=-1)
        result = self.pipeline(image=image, mask=packed, instances=np.asarray(instances, dtype=np.int32))
        packed, crop_instances = result["mask"], result["instances"]
        transformed_image = np.asarray(result["image"], dtype=np.float32)
        if self.trim_padding:  # the image sits at the top left of its crop
            height, width = int(packed[:, 0, _INSIDE].sum()), int(packed[0, :, _INSIDE].sum())
            packed, crop_instances = packed[:height, :width], crop_instances[:height, :width]
            transformed_image = transformed_image[:height, :width]
        outside = packed[..., _INSIDE] == 0
        transformed_image[outside] = 0.0
        return Transformed(
            image=transformed_image,
            semantic=np.where(outside, np.uint8(IGNORE), packed[..., _SEMANTIC]),
            instances=np.where(outside, 0, crop_instances).astype(np.int32),
            ignore=outside | (packed[..., _IGNORE] > 0),
        )


def build_train_transform(cfg: DataConfig) -> PanopticTransform:
    """Scale jitter in [scale_min, scale_max] × the original size, horizontal flip, random crop to
    crop_height × crop_width (where the scaled image is smaller: the whole image, padded at the bottom/right to the
    crop size only with `pad_to_crop`, else only to size_divisor when batched, as EfficientPS does), optional colour
    jitter (`color_jitter`), normalisation with cfg.mean/std on 0-255 RGB."""
    _check(cfg)
    transforms: list[A.BasicTransform] = [
        A.RandomScale(
            scale_limit=(cfg.scale_min - 1.0, cfg.scale_max - 1.0),  # albumentations adds 1 to the sampled limit
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        # flip before the crop so that padding stays at the bottom/right, as in collated batches
        A.HorizontalFlip(p=cfg.flip_prob),
        A.RandomCrop(
            cfg.crop_height,
            cfg.crop_width,
            pad_if_needed=True,
            pad_position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
        ),
    ]
    if cfg.color_jitter:
        transforms.append(
            A.ColorJitter(brightness=BRIGHTNESS, contrast=CONTRAST, saturation=SATURATION, hue=HUE, p=PHOTOMETRIC_PROB)
        )
    transforms.append(_normalize(cfg))
    return PanopticTransform(transforms, random=True, trim_padding=not cfg.pad_to_crop)


def build_eval_transform(cfg: DataConfig) -> PanopticTransform:
    """Resize by cfg.eval_scale (1.0: keep the size), then normalise; deterministic."""
    if cfg.eval_scale <= 0:
        raise ConfigError(f"data.eval_scale must be > 0, got {cfg.eval_scale}")
    transforms: list[A.BasicTransform] = []
    if cfg.eval_scale != 1.0:
        limit = cfg.eval_scale - 1.0
        transforms.append(
            A.RandomScale(
                scale_limit=(limit, limit),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    transforms.append(_normalize(cfg))
    return PanopticTransform(transforms, random=False, shrink_to=(cfg.eval_scale, cfg.eval_max_size))


def shrink_factor(size: tuple[int, int], scale: float, max_size: int) -> float:
    """The factor (≤ 1) that brings an image of `size` whose longer side × `scale` exceeds `max_size` down to it;
    1.0 when it does not exceed it, or when `max_size` is 0 (no limit)."""
    longer = max(size) * scale
    return max_size / longer if max_size > 0 and longer > max_size else 1.0


def decode_sizes(batch: Batch, cfg: DataConfig) -> list[tuple[int, int]]:
    """The size each image of `batch` is decoded at when large images stay small: its original size, or, for an
    image `build_eval_transform` shrank (`data.eval_max_size`), the size the network saw."""
    return [
        seen if shrink_factor(original, cfg.eval_scale, cfg.eval_max_size) < 1.0 else original
        for original, seen in zip(batch.original_sizes, batch.image_sizes, strict=True)
    ]


def _normalize(cfg: DataConfig) -> A.Normalize:
    # mean/std are on the 0-255 scale, so no division by the maximum pixel value
    return A.Normalize(mean=cfg.mean, std=cfg.std, max_pixel_value=1.0)


def _check(cfg: DataConfig) -> None:
    if not 0 < cfg.scale_min <= cfg.scale_max:
        raise ConfigError(
            f"data.scale_min/scale_max must satisfy 0 < scale_min <= scale_max, got {cfg.scale_min}, {cfg.scale_max}"
        )
    if cfg.crop_height <= 0 or cfg.crop_width <= 0:
        raise ConfigError(f"data.crop_height/crop_width must be > 0, got {cfg.crop_height}×{cfg.crop_width}")
    if not 0.0 <= cfg.flip_prob <= 1.0:
        raise ConfigError(f"data.flip_prob must be in [0, 1], got {cfg.flip_prob}")
