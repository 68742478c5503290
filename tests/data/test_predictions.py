"""Panoptic PNG/JSON files: the encoding of cityscapesscripts, atomic writes, clear errors."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import rgb2id
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from PIL import Image

from lpsctl.data.predictions import (
    panoptic_png_path,
    semantic_png_path,
    write_panoptic,
    write_panoptic_json,
    write_semantic_png,
)
from lpsctl.errors import DataError
from lpsctl.imagefile import read_panoptic_png
from lpsctl.jsonfile import read_panoptic_json
from lpsctl.labels import id_to_rgb, panoptic_categories, rgb_to_id
from lpsctl.structures import PanopticPrediction


def test_encoding_matches_the_reference_decoder() -> None:
    ids = np.random.default_rng(0).integers(0, 256**3, size=(7, 9)).astype(np.int32)
    ids[0, 0], ids[0, 1] = 26003, 256**3 - 1
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (7, 9, 3)
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    np.testing.assert_array_equal(rgb_to_id(rgb), ids)
    assert rgb[0, 0].tolist() == [26003 % 256, 26003 // 256, 0]


@pytest.mark.parametrize("bad", [-1, 256**3])
def test_ids_out_of_range_raise(bad: int) -> None:
    with pytest.raises(ValueError, match="panoptic ids must lie in"):
        id_to_rgb(np.array([[bad]]))


def test_write_and_read_back(tmp_path: Path) -> None:
    ids = np.array([[7, 7, 26000], [0, 24001, 24001]], dtype=np.int32)
    info = [{"id": np.int64(7), "category_id": 7, "area": np.int64(2), "bbox": [np.int64(0), 0, 2, 1], "iscrowd": 0}]
    annotation = write_panoptic(tmp_path, "aachen_000000_000019", PanopticPrediction(ids, info))
    path = panoptic_png_path(tmp_path, "aachen_000000_000019")
    assert path == tmp_path / "panoptic" / "aachen_000000_000019_panoptic.png"
    assert annotation == {
        "image_id": "aachen_000000_000019",
        "file_name": "aachen_000000_000019_panoptic.png",
        "segments_info": [{"id": 7, "category_id": 7, "area": 2, "bbox": [0, 0, 2, 1], "iscrowd": 0}],
    }
    np.testing.assert_array_equal(read_panoptic_png(path), ids)
    with Image.open(path) as image:
        assert image.mode == "RGB"
    json_path = write_panoptic_json(tmp_path, [annotation])
    assert json_path == tmp_path / "panoptic.json"
    content = read_panoptic_json(json_path)
    assert content["annotations"] == [annotation] and content["categories"] == panoptic_categories()
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "aachen_000000_000019_panoptic.png",
        "panoptic",
        "panoptic.json",
    ]  # no temporary files left behind


def test_categories_equal_those_of_create_panoptic_imgs(tmp_path: Path) -> None:
    folder = tmp_path / "gtFine" / "val" / "aachen"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 26000, dtype=np.int32)).save(folder / "aachen_000000_000019_gtFine_instanceIds.png")
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(tmp_path / "gtFine"), str(tmp_path / "gtFine"), setNames=["val"])
    gt = json.loads((tmp_path / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    assert panoptic_categories() == gt["categories"]
    png = tmp_path / "gtFine" / "cityscapes_panoptic_val" / gt["annotations"][0]["file_name"]
    assert (read_panoptic_png(png) == 26000).all()


def test_semantic_png_round_trip(tmp_path: Path) -> None:
    train_ids = np.array([[0, 18, 255]], dtype=np.uint8)
    path = write_semantic_png(tmp_path, "bonn_000001_000019", train_ids)
    assert path == semantic_png_path(tmp_path, "bonn_000001_000019")
    assert path.name == "bonn_000001_000019_labelTrainIds.png"
    np.testing.assert_array_equal(np.asarray(Image.open(path)), train_ids)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="panoptic PNG not found"):
        read_panoptic_png(tmp_path / "missing.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(DataError, match="must be RGB"):
        read_panoptic_png(tmp_path / "grey.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 9).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_panoptic_png(tmp_path / "cut.png")
    with pytest.raises(DataError, match="panoptic JSON not found"):
        read_panoptic_json(tmp_path / "panoptic.json")
    (tmp_path / "panoptic.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="expected an object with an 'annotations' list"):
        read_panoptic_json(tmp_path / "panoptic.json")
