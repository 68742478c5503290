"""What `lpsctl predict` reads: image files, folders, glob patterns and video files (anything OpenCV decodes), as a
stream of frames that never holds more than one decoded image per source."""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lpsctl.data.cityscapes import IMAGE_SUFFIX
from lpsctl.data.dataset import GLOB_CHARACTERS, IMAGE_SUFFIXES
from lpsctl.errors import DataError
from lpsctl.imagefile import read_rgb

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Source:
    """One input file: an image (one frame) or a video (`video` True). `name` is the image id of an image (its stem,
    without Cityscapes' `_leftImg8bit`), the id prefix of a video's frames."""

    path: Path
    name: str
    video: bool


@dataclass(frozen=True)
class Frame:
    """One image to predict: its id, its source, its index in a video (0 for an image) and its RGB pixels
    (uint8[H, W, 3]), or None with `error` saying why it could not be read."""

    image_id: str
    source: Source
    index: int
    rgb: np.ndarray | None
    error: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int  # as the container reports it (0 when unknown)
    width: int
    height: int


def expand_sources(inputs: Sequence[str | Path]) -> list[Source]:
    """Sources in input order: a file as given (by its suffix an image or a video), a folder's images and videos
    (recursively, sorted), a glob pattern's matches (sorted). Repeated image ids get `_2`, `_3`… in order.
    DataError for an input that matches nothing or a file of another kind."""
    if not inputs:
        raise DataError("nothing to predict: give image or video files, folders or glob patterns")
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if _kind(path) is None:
                kinds = f"an image ({'/'.join(IMAGE_SUFFIXES)}) or a video ({'/'.join(VIDEO_SUFFIXES)})"
                raise DataError(f"{path}: not {kinds}")
            paths.append(path)
            continue
        if path.is_dir():
            found, where = path.rglob("*"), f"in folder {path} (searched recursively)"
        elif any(character in str(item) for character in GLOB_CHARACTERS):
            found, where = (Path(match) for match in glob.glob(str(item), recursive=True)), f"matching '{item}'"
        else:
            raise DataError(f"input not found: {path}")
        matched = sorted(candidate for candidate in found if candidate.is_file() and _kind(candidate) is not None)
        if not matched:
            raise DataError(f"no images or videos found {where}")
        paths += matched
    return _named(paths)


def frames_of(source: Source, every: int = 1) -> Iterator[Frame]:
    """The frames of a source, every `every`-th of a video (frame ids `{name}_{index:06d}`). An unreadable image or
    video yields one Frame with an error; a video that ends before its reported length says so in a last one."""
    if not source.video:
        try:
            yield Frame(source.name, source, 0, read_rgb(source.path))
        except DataError as error:
            yield Frame(source.name, source, 0, None, str(error))
        return
    capture = cv2.VideoCapture(str(source.path))
    try:
        if not capture.isOpened():
            yield Frame(source.name, source, 0, None, f"cannot open video {source.path} (not a video OpenCV decodes)")
            return
        reported, index = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0
        while True:
            if not capture.grab():
                break
            if index % every == 0:
                ok, bgr = capture.retrieve()
                image_id = f"{source.name}_{index:06d}"
                if ok and bgr is not None:
                    yield Frame(image_id, source, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                else:
                    yield Frame(image_id, source, index, None, f"{source.path}: frame {index} cannot be decoded")
            index += 1
        if reported > 0 and index < reported - 1:
            message = f"{source.path}: the video ends after {index} of its {reported} frames (truncated or corrupt)"
            yield Frame(f"{source.name}_end", source, index, None, message)
    finally:
        capture.release()


def video_info(path: Path) -> VideoInfo:
    """Frame rate, frame count and size a video reports (fps 0 and sizes 0 when it cannot be opened)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return VideoInfo(
            fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
            frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
    finally:
        capture.release()


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def _named(paths: list[Path]) -> list[Source]:
    sources, used = [], set()
    for path in paths:
        base = path.name[: -len(IMAGE_SUFFIX)] if path.name.endswith(IMAGE_SUFFIX) else path.stem
        name, count = base, 1
        while name in used:
            count += 1
            name = f"{base}_{count}"
        if count > 1:
            log.info("%s: the id %s is taken, using %s", path, base, name)
        used.add(name)
        sources.append(Source(path, name, _kind(path) == "video"))
    return sources
