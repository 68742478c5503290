"""`lpsctl predict` on the user's own images and videos, `lpsctl export` (ONNX, TorchScript) and norm folding."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lpsctl.data.sources import expand_sources, frames_of
from lpsctl.engine.deploy import ExportedNetwork, FlatNetwork, export_network, flatten
from lpsctl.engine.inference import load_model
from lpsctl.errors import DataError
from lpsctl.imagefile import read_panoptic_png
from lpsctl.labels import panoptic_categories
from tests.cli_runner import run_lpsctl
from tests.tiny_models import write_checkpoint

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {"eps": write_checkpoint(folder / "eps.pt", "eps"), "solo": write_checkpoint(folder / "solo.pt", "solo")}


@pytest.fixture(scope="module")
def mixed_folder(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNG, a JPEG, a grayscale PNG, an RGBA PNG and a 16-bit grayscale PNG from the synthetic val images, plus a
    truncated PNG."""
    folder = tmp_path_factory.mktemp("mixed")
    images = sorted((prepared_root / "leftImg8bit" / "val").glob("*/*.png"))
    rgb = [np.asarray(Image.open(path).convert("RGB")) for path in images[:4]]
    Image.fromarray(rgb[0]).save(folder / "a_rgb.png")
    Image.fromarray(rgb[1]).save(folder / "b_photo.jpg", quality=95)
    Image.fromarray(rgb[2]).convert("L").save(folder / "c_gray.png")
    Image.fromarray(rgb[3]).convert("RGBA").save(folder / "d_rgba.png")
    gray16 = (np.asarray(Image.fromarray(rgb[0]).convert("L")).astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "e_gray16.png")
    (folder / "f_corrupt.png").write_bytes((folder / "a_rgb.png").read_bytes()[:300])
    return folder


def _json(out: Path) -> dict:
    return json.loads((out / "panoptic.json").read_text())


def test_predict_a_folder_of_mixed_images_skips_the_corrupt_one(mixed_folder, checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_lpsctl("predict", mixed_folder, "--checkpoint", checkpoints["eps"], "--out", out, "--overlay") == 0
    printed = capsys.readouterr().out
    assert "f_corrupt" in printed and "predicted 5 images/frames" in printed and "1 unreadable" in printed
    content = _json(out)
    names = [annotation["image_id"] for annotation in content["annotations"]]
    assert names == ["a_rgb", "b_photo", "c_gray", "d_rgba", "e_gray16"]
    assert content["categories"] == panoptic_categories()
    assert {image["id"]: (image["height"], image["width"]) for image in content["images"]} == dict.fromkeys(
        names, (128, 256)
    )
    for annotation in content["annotations"]:
        ids = read_panoptic_png(out / "panoptic" / annotation["file_name"])
        assert ids.shape == (128, 256)
        assert {segment["id"] for segment in annotation["segments_info"]} == set(np.unique(ids).tolist()) - {0}
        assert (out / "overlays" / f"{annotation['image_id']}_overlay.png").is_file()


def test_a_16_bit_image_is_scaled_not_clipped(mixed_folder):
    (frame,) = frames_of(next(s for s in expand_sources([mixed_folder / "e_gray16.png"])))
    expected = np.asarray(Image.open(mixed_folder / "a_rgb.png").convert("L"))
    assert frame.rgb is not None and frame.rgb.shape == (128, 256, 3)
    np.testing.assert_array_equal(frame.rgb[..., 0], expected)  # v·257 / 65535 · 255 = v
    assert 0 < frame.rgb.mean() < 255  # PIL's own convert("RGB") makes such a file pure white


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def video(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    images = sorted((prepared_root / "leftImg8bit" / "val").glob("*/*.png"))
    frames = [np.asarray(Image.open(images[index % len(images)]).convert("RGB")) for index in range(7)]
    path = tmp_path_factory.mktemp("video") / "drive.mp4"
    _write_video(path, frames, fps=10.0)
    return path


def test_predict_a_video_writes_every_frame_and_an_overlaid_video(video, checkpoints, tmp_path):
    out = tmp_path / "out"
    assert (
        run_lpsctl("predict", video, "--checkpoint", checkpoints["eps"], "--out", out, "--overlay", "--batch", 3) == 0
    )
    names = [annotation["image_id"] for annotation in _json(out)["annotations"]]
    assert names == [f"drive_{index:06d}" for index in range(7)]
    capture = cv2.VideoCapture(str(out / "drive_overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 7 and capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (128, 256, 3)

    every = tmp_path / "every"
    assert run_lpsctl("predict", video, "--checkpoint", checkpoints["eps"], "--out", every, "--every", 3) == 0
    assert [a["image_id"] for a in _json(every)["annotations"]] == ["drive_000000", "drive_000003", "drive_000006"]
    for name in ("drive_000000", "drive_000003", "drive_000006"):  # batch 3 and batch 1 give the same result
        assert np.array_equal(
            read_panoptic_png(every / "panoptic" / f"{name}_panoptic.png"),
            read_panoptic_png(out / "panoptic" / f"{name}_panoptic.png"),
        )


def test_predict_equals_fuse_on_the_same_images(prepared_root, checkpoints, tmp_path):
    fused, predicted = tmp_path / "fused", tmp_path / "predicted"
    args = ("--checkpoint", checkpoints["eps"])
    assert run_lpsctl("fuse", *args, "--root", prepared_root, "--split", "val", "--out", fused) == 0
    assert run_lpsctl("predict", prepared_root / "leftImg8bit" / "val", *args, "--out", predicted, "--batch", 2) == 0
    expected = {a["image_id"]: a for a in _json(fused)["annotations"]}
    got = {a["image_id"]: a for a in _json(predicted)["annotations"]}
    assert got.keys() == expected.keys() and len(got) == 4
    for image_id, annotation in expected.items():
        assert got[image_id]["segments_info"] == annotation["segments_info"]
        assert np.array_equal(
            read_panoptic_png(predicted / "panoptic" / annotation["file_name"]),
            read_panoptic_png(fused / "panoptic" / annotation["file_name"]),
        )


def test_predict_resumes_by_keeping_existing_results(mixed_folder, checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("predict", mixed_folder, "--checkpoint", checkpoints["eps"], "--out", out)
    assert run_lpsctl(*args) == 0
    first = _json(out)
    kept = out / "panoptic" / "b_photo_panoptic.png"
    before = kept.stat().st_mtime_ns
    (out / "panoptic" / "c_gray_panoptic.png").unlink()  # as if the first run had stopped there
    capsys.readouterr()
    assert run_lpsctl(*args) == 0
    assert "predicted 1 images/frames, 4 kept from an earlier run" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == before and _json(out) == first  # annotations read back from the PNGs
    assert run_lpsctl(*args, "--overwrite") == 0
    assert kept.stat().st_mtime_ns != before and _json(out) == first


def test_predict_input_errors(checkpoints, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_lpsctl("predict", mixed_folder, "--out", out) == 2
    assert "either --checkpoint" in capsys.readouterr().err
    assert run_lpsctl("predict", tmp_path / "nothing.png", "--checkpoint", checkpoints["eps"], "--out", out) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert run_lpsctl("predict", tmp_path / "notes.txt", "--checkpoint", checkpoints["eps"], "--out", out) == 2
    assert "not an image" in capsys.readouterr().err
    assert run_lpsctl("predict", mixed_folder, "--checkpoint", checkpoints["solo"], "--out", out) == 2
    assert "without a semantic head" in capsys.readouterr().err
    with pytest.raises(DataError, match="no images or videos found"):
        expand_sources([tmp_path / "empty*"])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_runs_outside_pytorch_eager_with_the_same_outputs(checkpoints, tmp_path, fmt):
    model, config = load_model(checkpoints["eps"], CPU, overrides=["inference.fold_norms=false"])
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    meta = export_network(model, config, path, fmt=fmt, height=128, width=256)
    assert meta["folded_norms"] > 0
    exported = ExportedNetwork(path, CPU)
    assert exported.input_size == (128, 256) and exported.config == config
    images = torch.randn(2, 3, 128, 256, generator=torch.Generator().manual_seed(0))  # a batch of 2: dynamic batch
    with torch.no_grad():
        expected = FlatNetwork(model)(images)
    flat = flatten(exported(images))
    assert len(flat) == len(expected) == 1 + 2 * 5 + 1
    for actual, reference in zip(flat, expected, strict=True):
        assert actual.shape == reference.shape
        assert torch.allclose(actual, reference, atol=1e-4, rtol=1e-4), (actual - reference).abs().max()


def test_predict_with_an_onnx_model_gives_the_checkpoints_pngs(checkpoints, mixed_folder, tmp_path, capsys):
    onnx_path = tmp_path / "model.onnx"
    assert (
        run_lpsctl("export", "--checkpoint", checkpoints["eps"], "--out", onnx_path, "--height", 128, "--width", 256)
        == 0
    )
    assert "exported" in capsys.readouterr().out
    assert run_lpsctl("export", "--checkpoint", checkpoints["eps"], "--out", onnx_path) == 2  # exists
    by_checkpoint, by_onnx = tmp_path / "checkpoint", tmp_path / "onnx"
    assert run_lpsctl("predict", mixed_folder, "--checkpoint", checkpoints["eps"], "--out", by_checkpoint) == 0
    assert run_lpsctl("predict", mixed_folder, "--model", onnx_path, "--out", by_onnx, "--batch", 2) == 0
    assert _json(by_onnx) == _json(by_checkpoint)
    for png in sorted((by_checkpoint / "panoptic").glob("*.png")):
        assert np.array_equal(read_panoptic_png(by_onnx / "panoptic" / png.name), read_panoptic_png(png))


def test_export_and_exported_model_errors(checkpoints, mixed_folder, tmp_path, capsys):
    export = ("export", "--checkpoint", checkpoints["eps"])
    assert run_lpsctl(*export, "--format", "tflite", "--out", tmp_path / "m.tflite") == 2
    assert "expected one of onnx, torchscript" in capsys.readouterr().err
    assert run_lpsctl(*export, "--out", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err
    assert run_lpsctl(*export, "--out", tmp_path / "m.onnx", "--height", 100, "--width", 256) == 2
    assert "multiple of 32" in capsys.readouterr().err
    predict = ("predict", mixed_folder, "--out", tmp_path / "out", "--model")
    assert run_lpsctl(*predict, tmp_path / "missing.onnx") == 2
    assert "exported model not found" in capsys.readouterr().err
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    assert run_lpsctl(*predict, tmp_path / "garbage.onnx") == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert run_lpsctl(*predict, checkpoints["eps"]) == 2  # a checkpoint is not a TorchScript export
    assert "not a TorchScript model from `lpsctl export`" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert run_lpsctl("predict", mixed_folder, "--checkpoint", checkpoints["eps"], "--out", tmp_path / "file") == 2
    assert "is a file" in capsys.readouterr().err


def test_an_image_above_eval_max_size_runs_smaller_and_is_written_at_its_own_size(mixed_folder, checkpoints, tmp_path):
    """A large photo costs what an image of data.eval_max_size costs: it is shrunk (INTER_AREA) before the network,
    decoded and fused at that size, and its ids upsampled (nearest) to the photo's size, with areas measured there."""
    image = np.asarray(Image.open(mixed_folder / "a_rgb.png").convert("RGB"))
    assert image.shape[:2] == (128, 256)
    small = tmp_path / "small" / "a_rgb.png"
    small.parent.mkdir()
    Image.fromarray(cv2.resize(image, (128, 64), interpolation=cv2.INTER_AREA)).save(small)
    args = ("--checkpoint", checkpoints["eps"])
    assert (
        run_lpsctl(
            "predict", mixed_folder / "a_rgb.png", *args, "--out", tmp_path / "big", "-s", "data.eval_max_size=128"
        )
        == 0
    )
    assert run_lpsctl("predict", small, *args, "--out", tmp_path / "ref") == 0
    big = read_panoptic_png(tmp_path / "big" / "panoptic" / "a_rgb_panoptic.png")
    reference = read_panoptic_png(tmp_path / "ref" / "panoptic" / "a_rgb_panoptic.png")
    assert big.shape == (128, 256) and reference.shape == (64, 128)
    assert np.array_equal(big, reference.repeat(2, axis=0).repeat(2, axis=1))
    segments = _json(tmp_path / "big")["annotations"][0]["segments_info"]
    assert {s["id"]: s["area"] for s in segments} == {int(i): int((big == i).sum()) for i in np.unique(big) if i}
    assert _json(tmp_path / "big")["images"][0]["height"] == 128
    assert (
        run_lpsctl(
            "visualize", mixed_folder / "a_rgb.png", *args, "--out", tmp_path / "vis", "-s", "data.eval_max_size=128"
        )
        == 0
    )
    assert Image.open(tmp_path / "vis" / "a_rgb_overlay.png").size == (256, 128)
