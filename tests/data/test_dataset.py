"""CityscapesPanoptic, ImageFolderDataset and collate_batch on tiny datasets written from arrays (and the prepared
synthetic dataset when the session fixture exists)."""

import json
import re
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lpsctl.config import DataConfig
from lpsctl.data.cityscapes import Paths, panoptic_json
from lpsctl.data.dataset import (
    CityscapesPanoptic,
    ImageFolderDataset,
    collate_batch,
    decode_instance_ids,
    expand_image_paths,
)
from lpsctl.data.transforms import build_train_transform
from lpsctl.errors import DataError
from lpsctl.labels import THING_LABEL_IDS, label_id_to_train_id_lut

HEIGHT, WIDTH = 32, 48
MEAN = torch.tensor(DataConfig().mean).view(3, 1, 1)
STD = torch.tensor(DataConfig().std).view(3, 1, 1)


def instance_ids_scene(seed: int = 0) -> np.ndarray:
    """int32[H, W] Cityscapes instanceIds: road/sky stuff, cars 26000/26001, a person 24000, a bicycle 33002,
    a car crowd (26), a caravan instance 29000 (thing label without a train id)."""
    ids = np.full((HEIGHT, WIDTH), 7, dtype=np.int32)  # road
    ids[:8] = 23  # sky
    shift = seed % 4
    ids[10 + shift : 20, 2:14] = 26000
    ids[12:24, 16 + shift : 26] = 26001
    ids[4:28, 28:33] = 24000
    ids[20:30, 36:46] = 33002
    ids[26:31, 2:12] = 26  # crowd
    ids[2:7, 36:46] = 29000  # caravan
    return ids


def colour_of(ids: np.ndarray) -> np.ndarray:
    """uint8[H, W, 3]: each distinct instanceIds value gets its own colour, so the image encodes the labels."""
    values, inverse = np.unique(ids, return_inverse=True)
    palette = np.stack([np.arange(len(values)) * 25, 255 - np.arange(len(values)) * 20, values % 7 * 30], axis=-1)
    return palette.astype(np.uint8)[inverse.reshape(ids.shape)]


def write_image(root: Path, split: str, image_id: str, image: np.ndarray, ids: np.ndarray | None = None) -> Paths:
    """Write one image (and, given instanceIds, its labelTrainIds and instanceIds PNGs) in Cityscapes layout."""
    paths = Paths(root, split, image_id.split("_")[0], image_id)
    paths.image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(paths.image)
    if ids is not None:
        paths.gt("x").parent.mkdir(parents=True, exist_ok=True)
        train_ids = label_id_to_train_id_lut()[np.where(ids >= 1000, ids // 1000, ids)]
        Image.fromarray(train_ids).save(paths.gt("labelTrainIds.png"))
        Image.fromarray(ids.astype(np.int32)).save(paths.gt("instanceIds.png"))
    return paths


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    for index, image_id in enumerate(["zurich_000002_000019", "aachen_000001_000019", "bonn_000000_000019"]):
        ids = instance_ids_scene(index)
        write_image(tmp_path, "train", image_id, colour_of(ids), ids)
    return tmp_path


def test_items_are_sorted_by_image_id_with_shapes_and_dtypes(tiny_root):
    dataset = CityscapesPanoptic(tiny_root, "train")
    assert len(dataset) == 3
    assert dataset.image_ids == sorted(dataset.image_ids)
    sample = dataset[0]
    assert sample.image_id == "aachen_000001_000019" and sample.original_size == (HEIGHT, WIDTH)
    assert sample.image.shape == (3, HEIGHT, WIDTH) and sample.image.dtype == torch.float32
    assert sample.semantic.shape == (HEIGHT, WIDTH) and sample.semantic.dtype == torch.int64
    assert sample.masks.dtype == torch.bool and sample.masks.shape[1:] == (HEIGHT, WIDTH)
    assert sample.classes.dtype == torch.int64 and sample.ignore.dtype == torch.bool
    ids = instance_ids_scene(1)
    expected_image = (torch.from_numpy(colour_of(ids)).permute(2, 0, 1).float() - MEAN) / STD
    torch.testing.assert_close(sample.image, expected_image)
    label_ids = np.where(ids >= 1000, ids // 1000, ids)
    assert torch.equal(sample.semantic, torch.from_numpy(label_id_to_train_id_lut()[label_ids].astype(np.int64)))


def test_masks_classes_and_crowd_come_from_instance_ids(tiny_root):
    sample = CityscapesPanoptic(tiny_root, "train")[0]
    ids = instance_ids_scene(1)
    thing_ids = sorted(int(v) for v in np.unique(ids) if v >= 1000 and v // 1000 in THING_LABEL_IDS)
    assert thing_ids == [24000, 26000, 26001, 33002]  # the caravan is no training instance
    assert sample.masks.shape[0] == len(thing_ids)
    for mask, label_class, value in zip(sample.masks, sample.classes, thing_ids, strict=True):
        assert torch.equal(mask, torch.from_numpy(ids == value))
        assert THING_LABEL_IDS[int(label_class)] == value // 1000
    assert torch.equal(sample.ignore, torch.from_numpy(np.isin(ids, THING_LABEL_IDS)))  # crowd only, not caravan


def test_decode_instance_ids_on_empty_and_stuff_only_maps():
    instances, classes, crowd = decode_instance_ids(np.full((4, 5), 7, dtype=np.int32))
    assert instances.shape == (4, 5) and not instances.any() and classes.shape == (0,) and not crowd.any()
    instances, classes, crowd = decode_instance_ids(np.zeros((0, 0), dtype=np.int32))
    assert instances.shape == (0, 0) and classes.shape == (0,)
    with pytest.raises(ValueError, match="instance ids must lie in"):
        decode_instance_ids(np.array([[7, -1]], dtype=np.int32))
    # an out-of-range label part (999 is no label id) is neither an instance nor a crowd
    instances, classes, crowd = decode_instance_ids(np.array([[999, 26001, 26]], dtype=np.int32))
    assert instances.tolist() == [[0, 1, 0]] and classes.tolist() == [2] and crowd.tolist() == [[False, False, True]]


def test_augmented_masks_agree_with_the_image(tiny_root):
    cfg = DataConfig(crop_height=24, crop_width=32, scale_min=0.75, scale_max=1.5, color_jitter=False, pad_to_crop=True)
    dataset = CityscapesPanoptic(tiny_root, "train", transform=build_train_transform(cfg))
    ids = instance_ids_scene(1)
    colour = {int(v): torch.from_numpy(colour_of(ids)[ids == v][0]).float() for v in np.unique(ids)}
    counts, checked = [], 0
    torch.manual_seed(0)
    for _ in range(10):
        sample = dataset[0]
        rgb = sample.image * STD + MEAN
        # interior of each mask: away from borders, where bilinear image and nearest labels may differ by a pixel
        eroded = -torch.nn.functional.max_pool2d(-sample.masks[None].float(), 5, 1, 2)[0] > 0
        eroded[:, :2], eroded[:, -2:], eroded[:, :, :2], eroded[:, :, -2:] = False, False, False, False
        counts.append(sample.masks.shape[0])
        assert sample.masks.flatten(1).any(1).all()  # vanished instances are dropped
        visible = eroded.flatten(1).any(1)
        for inner, label_class in zip(eroded[visible], sample.classes[visible], strict=True):
            matches = [v for v in colour if v >= 1000 and (rgb[:, inner] - colour[v][:, None]).abs().max() < 1]
            assert len(matches) == 1 and THING_LABEL_IDS[int(label_class)] == matches[0] // 1000
            checked += 1
        crowd = -torch.nn.functional.max_pool2d(-sample.ignore[None, None].float(), 5, 1, 2)[0, 0] > 0
        assert ((rgb[:, crowd] - colour[26][:, None]).abs() < 1).all()
    assert len(set(counts)) > 1 and checked > 20  # crops do remove instances sometimes


def test_same_torch_seed_same_samples_with_workers(tiny_root):
    cfg = DataConfig(crop_height=24, crop_width=32, scale_min=0.5, scale_max=2.0)
    dataset = CityscapesPanoptic(tiny_root, "train", transform=build_train_transform(cfg))

    def epochs(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=partial(collate_batch, size_divisor=8))
        return [next(iter(loader)).images for _ in range(2)]

    first, again, other = epochs(0), epochs(0), epochs(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # a new epoch draws new augmentations
    assert not torch.equal(first[0], other[0])


def test_images_only_needs_no_labels(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    write_image(tmp_path, "test", "berlin_000000_000019", image)
    sample = CityscapesPanoptic(tmp_path, "test", images_only=True)[0]
    assert sample.image.shape == (3, HEIGHT, WIDTH) and sample.image_id == "berlin_000000_000019"
    assert sample.masks.shape == (0, HEIGHT, WIDTH) and sample.classes.shape == (0,)
    assert (sample.semantic == 255).all() and sample.ignore.all()


def test_missing_train_ids_asks_for_prepare(tiny_root):
    Paths(tiny_root, "train", "bonn", "bonn_000000_000019").gt("labelTrainIds.png").unlink()
    with pytest.raises(DataError, match=r"1 of 3 .*bonn_000000_000019_gtFine_labelTrainIds.png.*lpsctl data prepare"):
        CityscapesPanoptic(tiny_root, "train")


def test_corrupt_png_names_the_file(tiny_root):
    path = Paths(tiny_root, "train", "bonn", "bonn_000000_000019").gt("instanceIds.png")
    path.write_bytes(path.read_bytes()[:60])
    dataset = CityscapesPanoptic(tiny_root, "train")
    with pytest.raises(DataError, match=r"bonn_000000_000019_gtFine_instanceIds.png.*corrupt"):
        dataset[dataset.image_ids.index("bonn_000000_000019")]


def test_size_mismatch_names_both_files(tiny_root):
    paths = Paths(tiny_root, "train", "aachen", "aachen_000001_000019")
    Image.fromarray(np.zeros((HEIGHT, WIDTH - 2), dtype=np.uint8)).save(paths.gt("labelTrainIds.png"))
    with pytest.raises(DataError, match=r"leftImg8bit.png is 48×32 but .*labelTrainIds.png is 46×32"):
        CityscapesPanoptic(tiny_root, "train")[0]


def test_unknown_train_id_is_an_error(tiny_root):
    paths = Paths(tiny_root, "train", "aachen", "aachen_000001_000019")
    Image.fromarray(np.full((HEIGHT, WIDTH), 40, dtype=np.uint8)).save(paths.gt("labelTrainIds.png"))
    with pytest.raises(DataError, match="labelTrainIds.png: values outside train ids"):
        CityscapesPanoptic(tiny_root, "train")[0]


def test_image_folder_reads_any_mode_and_format(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset([tmp_path])
    assert dataset.image_ids == ["alpha", "gray", "photo"]
    for sample in (dataset[i] for i in range(len(dataset))):
        assert sample.image.shape == (3, 20, 30) and sample.original_size == (20, 30)
        assert sample.masks.shape == (0, 20, 30)
    expected = (torch.from_numpy(rgb).permute(2, 0, 1).float() - MEAN) / STD
    torch.testing.assert_close(dataset[0].image, expected)
    assert ImageFolderDataset([tmp_path / "gray.png"]).image_ids == ["gray"]


def test_image_folder_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no images found"):
        ImageFolderDataset([])
    with pytest.raises(DataError, match="image not found: .*missing.png"):
        ImageFolderDataset([tmp_path / "missing.png"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "x.jpg")
    with pytest.raises(DataError, match="share the id 'x'"):
        ImageFolderDataset([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolderDataset([tmp_path / "broken.png"])[0]


def test_expand_image_paths_takes_files_folders_recursively_and_globs(tmp_path):
    for name in ("b.png", "a.JPG", "deep/er/c.jpeg", "deep/notes.txt", "other/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()  # a folder is no image, whatever its name
    given = [tmp_path / "deep", tmp_path / "other" / "d.png", str(tmp_path / "*.*")]
    assert expand_image_paths(given) == [
        tmp_path / "deep" / "er" / "c.jpeg",
        tmp_path / "other" / "d.png",
        tmp_path / "a.JPG",
        tmp_path / "b.png",
    ]
    assert expand_image_paths([tmp_path / "deep" / "notes.txt"]) == [tmp_path / "deep" / "notes.txt"]  # as given
    for bad, message in (
        (tmp_path / "folder.png", f"no images found in folder {tmp_path / 'folder.png'}"),
        (str(tmp_path / "*.gif"), f"no images found matching '{tmp_path / '*.gif'}'"),
        (tmp_path / "missing.png", f"image not found: {tmp_path / 'missing.png'}"),
    ):
        with pytest.raises(DataError, match=re.escape(message)):
            expand_image_paths([tmp_path / "b.png", bad])


def test_collate_pads_to_the_divisor_and_keeps_sizes(tiny_root):
    dataset = CityscapesPanoptic(tiny_root, "train")
    small = dataset[1]
    cropped = replace(
        dataset[0],
        image=dataset[0].image[:, :20, :45],
        semantic=dataset[0].semantic[:20, :45],
        masks=dataset[0].masks[:, :20, :45],
        ignore=dataset[0].ignore[:20, :45],
    )
    batch = collate_batch([cropped, small])
    assert batch.images.shape == (2, 3, 32, 64) and batch.semantic.shape == batch.ignore.shape == (2, 32, 64)
    assert batch.image_sizes == [(20, 45), (HEIGHT, WIDTH)] and batch.original_sizes == [(HEIGHT, WIDTH)] * 2
    assert batch.image_ids == [cropped.image_id, small.image_id]
    assert torch.equal(batch.images[0, :, :20, :45], cropped.image) and torch.equal(
        batch.masks[1][:, :32, :48], small.masks
    )
    assert (batch.images[0, :, 20:] == 0).all() and (batch.images[0, :, :, 45:] == 0).all()
    assert (batch.semantic[0, 20:] == 255).all() and batch.ignore[0, :, 45:].all() and batch.ignore[1, :, 48:].all()
    assert batch.masks[0].shape == (cropped.masks.shape[0], 32, 64) and not batch.masks[0][:, 20:].any()
    assert torch.equal(batch.classes[1], small.classes)
    assert collate_batch([small], size_divisor=1).images.shape == (1, 3, HEIGHT, WIDTH)
    assert collate_batch([small], size_divisor=20).images.shape == (1, 3, 40, 60)


def test_collate_bad_inputs():
    with pytest.raises(ValueError, match="at least one sample"):
        collate_batch([])


def test_prepared_synthetic_dataset_matches_the_panoptic_json(request):
    try:
        root = request.getfixturevalue("prepared_root")
    except pytest.FixtureLookupError:
        pytest.skip("the prepared_root fixture (tests/conftest.py) is not available")
    for split in ("train", "val"):
        segments = {
            a["image_id"]: a["segments_info"] for a in json.loads(panoptic_json(root, split).read_text())["annotations"]
        }
        dataset = CityscapesPanoptic(root, split)
        for index in range(len(dataset)):
            sample = dataset[index]
            things = [s for s in segments[sample.image_id] if s["category_id"] in THING_LABEL_IDS and not s["iscrowd"]]
            assert sorted(THING_LABEL_IDS[int(c)] for c in sample.classes) == sorted(s["category_id"] for s in things)
            assert sorted(sample.masks.flatten(1).sum(1).tolist()) == sorted(s["area"] for s in things)
            crowd_area = sum(s["area"] for s in segments[sample.image_id] if s["iscrowd"])
            assert int(sample.ignore.sum()) == crowd_area
