"""Reading JSON files that users hand to lpsctl, with one-line errors for a missing or malformed file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lpsctl.errors import DataError


def read_json(path: str | Path, *, missing: str) -> Any:
    """The decoded content of `path`; DataError(`missing`) when it is not a file, and one naming the decoding problem
    when it is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(missing)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read {path}: not valid JSON ({error})") from None


def read_panoptic_json(path: str | Path) -> dict[str, Any]:
    """A panoptic JSON (ground truth or prediction) with a clear error when missing or malformed."""
    content = read_json(path, missing=f"panoptic JSON not found: {path}")
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        raise DataError(f"{path}: not a panoptic JSON (expected an object with an 'annotations' list)")
    return content
