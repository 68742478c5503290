"""Reading and encoding PNG files with one-line errors for a missing, corrupt or truncated file (a leaf module that
every layer may use, like `jsonfile` and `atomic`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from lpsctl.errors import DataError


def read_png(path: Path, mode: str | None = None) -> np.ndarray:
    """Read a PNG fully (so truncation is detected now); `mode` converts (e.g. "RGB"). Clear error when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
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
