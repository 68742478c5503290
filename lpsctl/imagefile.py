"""Reading and encoding PNG files with one-line errors for a missing, corrupt or truncated file (a leaf module that
every layer may use, like `jsonfile` and `atomic`)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyspng
from PIL import Image

from lpsctl.errors import DataError

#: PNG colour types libspng decodes here, for 8-bit files: what PIL's array of the same file would be
_SPNG_FORMATS = {0: "L", 2: "RGB", 6: "RGBA"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_format(header: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's first 26 bytes (IHDR is the first chunk: bytes 24 and 25); None when
    they are not a PNG's."""
    if len(header) < 26 or header[:8] != _PNG_SIGNATURE:
        return None
    return header[24], header[25]


def is_8bit_rgb_png(path: Path) -> bool:
    """Whether the file's PNG header says 8-bit RGB or RGBA (reads 26 bytes)."""
    try:
        with open(path, "rb") as file:
            found = png_format(file.read(26))
    except OSError:
        return False
    return found is not None and found[0] == 8 and found[1] in (2, 6)


def _decode_fast(path: Path, as_mode: str | None = None) -> tuple[np.ndarray, str] | None:
    """(pixels, the file's PIL mode) of an 8-bit grayscale, RGB or RGBA PNG decoded by libspng (pyspng: 4-19×
    faster than PIL here, CRCs checked), as `as_mode` when given, else as stored; None for every other file, which
    PIL reads. DataError when libspng finds it corrupt or truncated."""
    data = path.read_bytes()
    found = png_format(data)
    if found is None or found[0] != 8 or found[1] not in _SPNG_FORMATS:
        return None
    mode = _SPNG_FORMATS[data[25]]
    try:
        _check_chunks(data)  # (libspng, as pyspng sets it up, does not check them)
        pixels = pyspng.load(data, as_mode or mode)
    except (RuntimeError, ValueError) as error:
        raise DataError(f"cannot read {path}: corrupt or truncated image ({error})") from None
    return (pixels[..., 0] if (as_mode or mode) == "L" and pixels.ndim == 3 else pixels), mode


def _check_chunks(data: bytes) -> None:
    """ValueError unless every chunk of a PNG is whole, its CRC right, and IEND present (zlib's CRC runs at GB/s:
    microseconds for a compressed label map). Not checked: the zlib stream's own Adler-32, which libspng skips, so a
    writer that stored damaged compressed data under correct chunk CRCs goes unnoticed (PIL would see it)."""
    position, view = 8, memoryview(data)
    while position + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        end = position + 8 + length
        if end + 4 > len(data):
            break
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(view[position + 4 : end]) != crc:
            raise ValueError(f"CRC error in chunk {data[position + 4 : position + 8]!r}")
        if data[position + 4 : position + 8] == b"IEND":
            return
        position = end + 4
    raise ValueError("the file ends before its IEND chunk")


def read_png(path: Path, mode: str | None = None) -> np.ndarray:
    """Read a PNG fully (so truncation is detected now); `mode` converts (e.g. "RGB"). Clear error when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fast = _decode_fast(path)
    if fast is not None and mode in (None, fast[1]):
        return fast[0]
    try:
        with Image.open(path) as image:
            image.load()
            converted = image.convert(mode) if mode is not None and image.mode != mode else image
            return np.asarray(converted)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path}: corrupt or truncated image ({error})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8[H, W, 3] RGB of a PNG or JPEG of any common mode: grayscale and palette images are expanded, an alpha
    channel dropped, 16-bit and 32-bit grayscale scaled to 0-255 (PIL's own "RGB" conversion clips them to white).
    DataError when the file is missing, unreadable or truncated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    fast = _decode_fast(path)
    if fast is not None and fast[1] == "RGB":
        return fast[0]
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(image).astype(np.float64)
                top = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
                gray = np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path}: corrupt or truncated image ({error})") from None


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """int32[H, W] segment ids (R + 256·G + 256²·B) of an RGB panoptic PNG; DataError when missing, unreadable or
    not RGB."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"panoptic PNG not found: {path}")
    fast = _decode_fast(path, as_mode="RGBA")
    if fast is not None and fast[1] in ("RGB", "RGBA"):
        # the little-endian word of R, G, B, A is id + A·256³: masked in place (a new array costs 3× the decoding)
        words = fast[0].view("<u4")[..., 0]
        np.bitwise_and(words, 0xFFFFFF, out=words)
        return words.view(np.int32)
    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA"):
                raise DataError(f"{path}: panoptic PNGs must be RGB (id = R + 256·G + 256²·B), got mode {image.mode}")
            image.load()  # decoding inside convert() on the open file is 2-3× slower
            converted = image.convert("RGBA")
        rgba = np.asarray(converted)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path}: corrupt or truncated image ({error})") from None
    # one pass: the little-endian word of R, G, B, A is id + A·256³; ids < 256³ fit int32 unchanged
    return (rgba.view("<u4")[..., 0] & 0xFFFFFF).view(np.int32)


def png_bytes(array: np.ndarray, *, compress_level: int = 6) -> bytes:
    """The PNG encoding of uint8[H, W] or uint8[H, W, 3] (PIL)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
