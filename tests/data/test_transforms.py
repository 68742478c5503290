"""Train/eval transforms: shared geometry between the image and every label map, padding values, seeding."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from lpsctl.config import DataConfig
from lpsctl.data.transforms import build_eval_transform, build_train_transform
from lpsctl.errors import ConfigError

HEIGHT, WIDTH = 64, 96
MEAN = np.array(DataConfig().mean, dtype=np.float32)
STD = np.array(DataConfig().std, dtype=np.float32)
SMALL = DataConfig(crop_height=48, crop_width=64, scale_min=0.5, scale_max=2.0, color_jitter=False, pad_to_crop=True)


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """semantic uint8[H, W] (stuff bands + thing boxes), instances int32[H, W] (1..4), crowd bool[H, W]."""
    semantic = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)  # road
    semantic[:20] = 10  # sky
    semantic[20:40, 48:] = 2  # building
    instances = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    boxes = [(24, 50, 6, 34, 13), (28, 60, 50, 64, 11), (4, 26, 68, 92, 13), (42, 62, 70, 94, 18)]
    for index, (top, bottom, left, right, train_id) in enumerate(boxes, start=1):
        instances[top:bottom, left:right] = index
        semantic[top:bottom, left:right] = train_id
    crowd = np.zeros((HEIGHT, WIDTH), dtype=bool)
    crowd[52:62, 8:30] = True
    semantic[crowd] = 13
    return semantic, instances, crowd


def colours(semantic: np.ndarray, instances: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """uint8[..., 3]: a distinct colour per stuff class, per instance and for crowd, so the image encodes labels."""
    colour = np.stack([semantic * 12, instances * 50, crowd * 200], axis=-1)
    return colour.astype(np.uint8)


def denormalise(image: np.ndarray) -> np.ndarray:
    return image * STD + MEAN


def interior(key: np.ndarray, radius: int = 2) -> np.ndarray:
    """bool[H, W]: pixels whose (2r+1)² neighbourhood carries the same label key (away from label borders), not
    within r of the frame (the scaled image there blends in pixels from outside the crop)."""
    values = torch.from_numpy(key.astype(np.float64))[None, None]
    size = 2 * radius + 1
    high = torch.nn.functional.max_pool2d(values, size, 1, radius)
    low = -torch.nn.functional.max_pool2d(-values, size, 1, radius)
    same = ((high == values) & (low == values))[0, 0].numpy()
    same[:radius], same[-radius:], same[:, :radius], same[:, -radius:] = False, False, False, False
    return same


def run(transform, seed: int, semantic, instances, crowd, image=None):
    transform.set_random_seed(seed)
    image = colours(semantic, instances, crowd) if image is None else image
    return transform(image, semantic, instances, crowd)


def test_train_output_shapes_and_dtypes():
    out = run(build_train_transform(SMALL), 0, *scene())
    assert out.image.shape == (48, 64, 3) and out.image.dtype == np.float32
    assert out.semantic.shape == out.instances.shape == out.ignore.shape == (48, 64)
    assert out.semantic.dtype == np.uint8 and out.instances.dtype == np.int32 and out.ignore.dtype == bool


@pytest.mark.parametrize("seed", range(12))
def test_image_and_labels_agree_after_scale_flip_crop(seed):
    semantic, instances, crowd = scene()
    out = run(build_train_transform(SMALL), seed, semantic, instances, crowd)
    padding = out.semantic == 255  # the scene has no void pixels, so 255 only marks padding
    assert np.all(out.image[padding] == 0) and np.all(out.ignore[padding]) and np.all(out.instances[padding] == 0)
    expected = colours(out.semantic, out.instances, out.ignore).astype(np.float32)
    key = out.semantic.astype(np.int64) * 1000 + out.instances * 10 + out.ignore
    inside = interior(key) & ~padding
    assert inside.sum() > 500
    assert np.abs(denormalise(out.image) - expected)[inside].max() < 1.0
    assert set(np.unique(out.instances)) <= set(range(5))


@pytest.mark.parametrize("seed", range(8))
def test_crop_and_flip_move_every_map_together(seed):
    # colour = source (row, column): every output pixel says where it came from
    semantic, instances, crowd = scene()
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    image = np.stack([rows, columns, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    cfg = replace(SMALL, scale_min=1.0, scale_max=1.0, crop_height=40, crop_width=56)
    out = run(build_train_transform(cfg), seed, semantic, instances, crowd, image=image)
    source = np.rint(denormalise(out.image)).astype(int)
    source_rows, source_columns = source[..., 0], source[..., 1]
    assert np.array_equal(out.semantic, semantic[source_rows, source_columns])
    assert np.array_equal(out.instances, instances[source_rows, source_columns])
    assert np.array_equal(out.ignore, crowd[source_rows, source_columns])
    assert np.all(np.diff(source_rows, axis=0) == 1)
    assert np.all(np.abs(np.diff(source_columns, axis=1)) == 1)


def test_flip_and_crop_vary_with_the_seed():
    semantic, instances, crowd = scene()
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    image = np.stack([rows, columns, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    transform = build_train_transform(replace(SMALL, scale_min=1.0, scale_max=1.0, crop_height=40, crop_width=56))
    corners = set()
    for seed in range(16):
        source = np.rint(denormalise(run(transform, seed, semantic, instances, crowd, image=image).image)).astype(int)
        corners.add((source[0, 0, 0], source[0, 0, 1], bool(source[0, 1, 1] < source[0, 0, 1])))
    assert {flipped for *_, flipped in corners} == {True, False}
    assert len({(row, column) for row, column, _ in corners}) > 4


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_flip_probability_is_exact(flip_prob):
    semantic, instances, crowd = scene()
    cfg = replace(SMALL, scale_min=1.0, scale_max=1.0, crop_height=HEIGHT, crop_width=WIDTH, flip_prob=flip_prob)
    image = colours(semantic, instances, crowd)
    out = run(build_train_transform(cfg), 3, semantic, instances, crowd, image=image)
    flip = np.fliplr if flip_prob == 1.0 else (lambda array: array)
    assert np.array_equal(out.semantic, flip(semantic)) and np.array_equal(out.instances, flip(instances))
    assert np.array_equal(out.ignore, flip(crowd))
    np.testing.assert_allclose(out.image, (flip(image) - MEAN) / STD, atol=1e-5)


def test_padding_where_the_crop_exceeds_the_image():
    semantic, instances, crowd = scene()
    cfg = replace(SMALL, scale_min=1.0, scale_max=1.0, crop_height=80, crop_width=128, flip_prob=0.0, color_jitter=True)
    image = colours(semantic, instances, crowd)
    out = run(build_train_transform(cfg), 0, semantic, instances, crowd, image=image)
    assert out.image.shape == (80, 128, 3)
    assert np.array_equal(out.semantic[:HEIGHT, :WIDTH], semantic)  # image kept at the top left
    assert np.array_equal(out.instances[:HEIGHT, :WIDTH], instances)
    assert np.array_equal(out.ignore[:HEIGHT, :WIDTH], crowd)
    for region in (np.s_[HEIGHT:, :], np.s_[:, WIDTH:]):
        assert np.all(out.image[region] == 0.0)  # exactly the mean, even with colour jitter
        assert np.all(out.semantic[region] == 255) and np.all(out.ignore[region]) and np.all(out.instances[region] == 0)


def test_without_pad_to_crop_a_small_image_is_not_padded_to_the_crop():
    """The official recipe: a scaled image smaller than the crop stays its own size (batches pad it to 32)."""
    semantic, instances, crowd = scene()
    cfg = replace(SMALL, scale_min=1.0, scale_max=1.0, crop_height=80, crop_width=128, flip_prob=0.0,
                  pad_to_crop=False)  # fmt: skip
    out = run(build_train_transform(cfg), 0, semantic, instances, crowd)
    assert out.image.shape == (HEIGHT, WIDTH, 3) and out.semantic.shape == out.ignore.shape == (HEIGHT, WIDTH)
    assert np.array_equal(out.semantic, semantic) and np.array_equal(out.instances, instances)
    assert np.array_equal(out.ignore, crowd)
    tall = run(build_train_transform(replace(cfg, crop_height=48)), 0, semantic, instances, crowd)
    assert tall.image.shape == (48, WIDTH, 3)  # cropped where the image is larger, left whole where smaller


def test_scale_jitter_stays_in_range():
    semantic, instances, crowd = scene()
    cfg = replace(SMALL, scale_min=0.5, scale_max=0.75, crop_height=200, crop_width=200)
    transform = build_train_transform(cfg)
    heights = []
    for seed in range(10):
        out = run(transform, seed, semantic, instances, crowd)
        heights.append(int((out.semantic != 255).any(axis=1).sum()))
    assert min(heights) >= int(HEIGHT * 0.5) and max(heights) <= round(HEIGHT * 0.75)
    assert len(set(heights)) > 1


def test_same_seed_same_result_and_different_seeds_differ():
    semantic, instances, crowd = scene()
    transform = build_train_transform(replace(SMALL, color_jitter=True))
    first, again = run(transform, 7, semantic, instances, crowd), run(transform, 7, semantic, instances, crowd)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    others = [run(transform, seed, semantic, instances, crowd) for seed in range(8, 12)]
    assert any(
        other.image.shape != first.image.shape or not np.array_equal(other.image, first.image) for other in others
    )


def test_photometric_jitter_changes_colours_only_and_independently_of_the_flip():
    semantic, instances, crowd = scene()
    cfg = replace(SMALL, scale_min=1.0, scale_max=1.0, crop_height=HEIGHT, crop_width=WIDTH)
    plain, jittered = build_train_transform(cfg), build_train_transform(replace(cfg, color_jitter=True))
    outcomes = set()
    for seed in range(40):
        a, b = run(plain, seed, semantic, instances, crowd), run(jittered, seed, semantic, instances, crowd)
        assert np.array_equal(a.semantic, b.semantic) and np.array_equal(a.instances, b.instances)
        flipped = not np.array_equal(a.semantic, semantic)
        outcomes.add((flipped, not np.allclose(a.image, b.image)))
    # albumentations' own Compose.set_random_seed would tie the two coin flips together: only (F, F) and (T, T)
    assert outcomes == {(False, False), (False, True), (True, False), (True, True)}


def test_eval_transform_normalises_and_rescales():
    semantic, instances, crowd = scene()
    image = colours(semantic, instances, crowd)
    out = build_eval_transform(DataConfig())(image, semantic, instances, crowd)
    np.testing.assert_allclose(out.image, (image - MEAN) / STD, atol=1e-5)
    assert np.array_equal(out.semantic, semantic) and np.array_equal(out.instances, instances)
    half = build_eval_transform(DataConfig(eval_scale=0.5))(image, semantic, instances, crowd)
    assert half.image.shape == (HEIGHT // 2, WIDTH // 2, 3)
    assert np.array_equal(half.semantic, semantic[::2, ::2]) and np.array_equal(half.instances, instances[::2, ::2])
    assert not build_eval_transform(DataConfig()).random


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale_min": 2.0, "scale_max": 1.0}, "scale_min"),
        ({"scale_min": 0.0}, "scale_min"),
        ({"crop_height": 0}, "crop_height"),
        ({"flip_prob": 1.5}, "flip_prob"),
    ],
)
def test_bad_train_config_is_a_clear_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_train_transform(replace(DataConfig(), **changes))


def test_bad_eval_scale_is_a_clear_error():
    with pytest.raises(ConfigError, match="eval_scale"):
        build_eval_transform(DataConfig(eval_scale=0.0))


@pytest.mark.parametrize("size", [(300, 900), (1, 900), (900, 1)])
def test_eval_transform_shrinks_a_longer_side_above_eval_max_size(size):
    """data.eval_max_size caps the longer side (after eval_scale); the other side keeps the aspect, never below 1."""
    cfg = replace(DataConfig(), eval_max_size=300)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    semantic = np.zeros(size, np.uint8)
    out = build_eval_transform(cfg)(image, semantic, np.zeros(size, np.int32), np.zeros(size, bool))
    assert max(out.image.shape[:2]) == 300 and min(out.image.shape[:2]) >= 1
    assert out.semantic.shape == out.image.shape[:2] == out.instances.shape
    crop = semantic[:100, :200].shape
    small = build_eval_transform(cfg)(image[:100, :200], semantic[:100, :200], np.zeros(crop, np.int32),
                                      np.zeros(crop, bool))  # fmt: skip
    assert small.image.shape[:2] == crop  # below the cap: untouched
