"""PNG reading: libspng (pyspng) for 8-bit grayscale/RGB/RGBA files gives exactly PIL's pixels; other files go
through PIL; corrupt files are one-line DataErrors either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpsctl.errors import DataError
from lpsctl.imagefile import _decode_fast, read_panoptic_png, read_png, read_rgb
from lpsctl.labels import id_to_rgb

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "mode, pixels",
    [
        ("L", RNG.integers(0, 256, (37, 53), dtype=np.uint8)),
        ("RGB", RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)),
        ("RGBA", RNG.integers(0, 256, (37, 53, 4), dtype=np.uint8)),
    ],
)
def test_the_fast_decoder_gives_pils_pixels(tmp_path: Path, mode: str, pixels: np.ndarray):
    path = tmp_path / f"{mode}.png"
    Image.fromarray(pixels, mode).save(path)
    assert _decode_fast(path) is not None  # (the path under test)
    with Image.open(path) as image:
        expected = np.asarray(image)
    assert np.array_equal(read_png(path), expected) and read_png(path).dtype == np.uint8
    if mode != "L":
        with Image.open(path) as image:
            assert np.array_equal(read_rgb(path), np.asarray(image.convert("RGB")))


def test_panoptic_ids_of_rgb_and_rgba_files(tmp_path: Path):
    ids = RNG.integers(0, 256**3, (40, 70)).astype(np.int32)
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "rgb.png", compress_level=1)
    Image.fromarray(np.dstack([id_to_rgb(ids), np.full(ids.shape, 7, np.uint8)])).save(tmp_path / "rgba.png")
    for name in ("rgb.png", "rgba.png"):
        got = read_panoptic_png(tmp_path / name)
        assert got.dtype == np.int32 and np.array_equal(got, ids)


def test_other_files_go_through_pil(tmp_path: Path):
    """16-bit grayscale (instanceIds) and palette PNGs are read by PIL, with PIL's values."""
    wide = RNG.integers(0, 40000, (20, 30)).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "16.png")
    Image.fromarray(RNG.integers(0, 4, (20, 30), dtype=np.uint8), "P").save(tmp_path / "p.png")
    for name in ("16.png", "p.png"):
        assert _decode_fast(tmp_path / name) is None
        with Image.open(tmp_path / name) as image:
            assert np.array_equal(read_png(tmp_path / name), np.asarray(image))


def test_a_flipped_byte_or_a_cut_file_is_a_data_error(tmp_path: Path):
    path = tmp_path / "ok.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    start = data.index(b"IDAT") + 4
    flipped = bytearray(data)
    flipped[start + 50] ^= 0xFF  # the chunk's CRC no longer fits
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name in ("flipped.png", "cut.png"):
        for read in (read_png, read_panoptic_png, read_rgb):
            with pytest.raises(DataError, match=f"cannot read .*{name}: corrupt or truncated"):
                read(tmp_path / name)
