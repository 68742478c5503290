"""Overlays: colours, the input's size (legend inside the image, side by side = twice the width), prediction folders,
and `lpsctl visualize` on images, folders, globs and prediction folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, name2label
from PIL import Image

from lpsctl.data.predictions import write_panoptic, write_panoptic_json
from lpsctl.engine.visualize import render_prediction_folder
from lpsctl.errors import DataError
from lpsctl.structures import PanopticPrediction
from lpsctl.visualize import VOID_COLOR, color_panoptic, draw_overlay, instance_color
from tests.cli_runner import run_lpsctl as run
from tests.tiny_models import write_checkpoint

ROAD, SKY, CAR = name2label["road"].id, name2label["sky"].id, name2label["car"].id


def scene(height: int = 96, width: int = 160) -> np.ndarray:
    """Panoptic ids: sky on top, road below, two cars, a void strip on the left."""
    ids = np.full((height, width), ROAD, dtype=np.int32)
    ids[: height // 3] = SKY
    ids[40:70, 20:60] = CAR * 1000
    ids[45:75, 70:110] = CAR * 1000 + 1
    ids[:, :4] = 0
    return ids


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def test_color_panoptic_uses_the_palette_and_one_colour_per_instance():
    ids = scene()
    colored, colors = color_panoptic(ids)
    assert colored.shape == (*ids.shape, 3) and colored.dtype == np.uint8
    assert tuple(colored[90, 150]) == id2label[ROAD].color
    assert tuple(colored[0, 150]) == id2label[SKY].color
    assert tuple(colored[0, 0]) == VOID_COLOR
    assert tuple(colored[50, 30]) == instance_color(CAR * 1000) != instance_color(CAR * 1000 + 1)
    assert tuple(colored[50, 80]) == instance_color(CAR * 1000 + 1)
    assert sorted(colors) == sorted([0, ROAD, SKY, CAR * 1000, CAR * 1000 + 1])
    assert color_panoptic(np.zeros((0, 5), dtype=np.int32))[0].shape == (0, 5, 3)


def test_overlay_keeps_the_input_size_with_the_legend_inside():
    ids = scene()
    image = np.full((*ids.shape, 3), 40, dtype=np.uint8)
    overlay = draw_overlay(image, ids)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    # the legend is a light box in the bottom-right corner; the rest of the road stays dark
    assert overlay[-8:, -20:].mean() > 180 and overlay[-8:, 5:20].mean() < 120
    # instances: their own colour blended in, and a white contour on their border
    blended = (image[50, 30] * 0.45 + np.array(instance_color(CAR * 1000)) * 0.55).astype(np.uint8)
    assert np.abs(overlay[55, 40].astype(int) - blended).max() <= 1
    assert (overlay[69, 30:50] == 255).all()
    side = draw_overlay(image, ids, side_by_side=True)
    assert side.shape == (96, 320, 3)
    assert np.array_equal(side[:, :160], image) and np.array_equal(side[:, 160:], overlay)


def test_overlay_without_segments_has_no_legend():
    image = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    overlay = draw_overlay(image, np.zeros((40, 64), dtype=np.int32), alpha=0.5)
    assert np.array_equal(overlay, (image * 0.5).astype(np.uint8))


def test_overlay_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="differ in size"):
        draw_overlay(np.zeros((10, 20, 3), dtype=np.uint8), np.zeros((10, 21), dtype=np.int32))
    with pytest.raises(ValueError, match="uint8"):
        draw_overlay(np.zeros((10, 20), dtype=np.uint8), np.zeros((10, 20), dtype=np.int32))


def _prediction_folder(folder: Path, ids_per_image: dict[str, np.ndarray]) -> Path:
    annotations = []
    for image_id, ids in ids_per_image.items():
        segments = [{"id": int(s), "category_id": int(s if s < 1000 else s // 1000)} for s in np.unique(ids) if s]
        annotations.append(write_panoptic(folder, image_id, PanopticPrediction(ids=ids, segments_info=segments)))
    write_panoptic_json(folder, annotations)
    return folder


def test_render_prediction_folder(tmp_path: Path):
    pred = _prediction_folder(tmp_path / "pred", {"town_000000_000001": scene(), "town_000000_000002": scene(64, 128)})
    images = tmp_path / "images" / "town"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((96, 160, 3), dtype=np.uint8)).save(images / "town_000000_000001_leftImg8bit.png")
    written = render_prediction_folder(pred, tmp_path / "out", images=tmp_path / "images", side_by_side=True)
    assert [p.name for p in written] == ["town_000000_000001_overlay.png", "town_000000_000002_overlay.png"]
    assert read(written[0]).shape == (96, 320, 3)  # the input image found: side by side
    assert read(written[1]).shape == (64, 128, 3)  # no input image: the colours alone
    assert tuple(read(written[1])[60, 10]) == id2label[ROAD].color
    Image.fromarray(np.zeros((50, 50, 3), dtype=np.uint8)).save(images / "town_000000_000002_leftImg8bit.png")
    with pytest.raises(DataError, match="must hold the images that were predicted"):
        render_prediction_folder(pred, tmp_path / "out", images=tmp_path / "images")


@pytest.fixture(scope="module")
def eps_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("checkpoints") / "eps.pt", "eps")


@pytest.fixture(scope="module")
def user_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Grayscale 70×100, RGBA 45×130 and JPEG 64×96 images: none is a multiple of 32 on both sides."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 100), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (45, 130, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=90)
    return folder


def _sizes(folder: Path) -> dict[str, tuple[int, ...]]:
    return {path.name: read(path).shape for path in sorted(folder.glob("*.png"))}


def test_visualize_images_folders_and_globs(eps_checkpoint: Path, user_images: Path, tmp_path: Path):
    assert run("visualize", user_images / "gray.png", "--checkpoint", eps_checkpoint, "--out", tmp_path / "one") == 0
    assert _sizes(tmp_path / "one") == {"gray_overlay.png": (70, 100, 3)}
    assert run("visualize", user_images, "--checkpoint", eps_checkpoint, "--out", tmp_path / "folder") == 0
    expected = {"gray_overlay.png": (70, 100, 3), "photo_overlay.png": (64, 96, 3), "rgba_overlay.png": (45, 130, 3)}
    assert _sizes(tmp_path / "folder") == expected
    pattern = str(user_images / "*.png")
    assert run("visualize", pattern, "--checkpoint", eps_checkpoint, "--out", tmp_path / "glob", "--side-by-side") == 0
    assert _sizes(tmp_path / "glob") == {"gray_overlay.png": (70, 200, 3), "rgba_overlay.png": (45, 260, 3)}
    left = read(tmp_path / "glob" / "gray_overlay.png")[:, :100]
    assert np.array_equal(left[..., 0], np.asarray(Image.open(user_images / "gray.png")))  # gray → RGB, unchanged


def test_visualize_a_prediction_folder(tmp_path: Path, capsys):
    ids = {"town_000000_000001": scene(), "town_000000_000002": scene(70, 90)}
    pred = _prediction_folder(tmp_path / "pred", ids)
    images = tmp_path / "images"
    images.mkdir()
    for image_id, value in ids.items():
        Image.fromarray(np.zeros((*value.shape, 3), dtype=np.uint8)).save(images / f"{image_id}_leftImg8bit.png")
    assert run("visualize", pred, "--images", images, "--out", tmp_path / "out") == 0
    assert "wrote 2 overlay(s)" in capsys.readouterr().out
    assert _sizes(tmp_path / "out") == {
        "town_000000_000001_overlay.png": (96, 160, 3),
        "town_000000_000002_overlay.png": (70, 90, 3),
    }


def test_visualize_with_a_semantic_only_model(user_images: Path, tmp_path: Path):
    checkpoint = write_checkpoint(tmp_path / "semantic.pt", "eps", extra=("model.instance_head=false",))
    assert run("visualize", user_images / "rgba.png", "--checkpoint", checkpoint, "--out", tmp_path / "out") == 0
    assert _sizes(tmp_path / "out") == {"rgba_overlay.png": (45, 130, 3)}
