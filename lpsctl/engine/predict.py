"""`lpsctl predict`: panoptic results for the user's own images and videos, in COCO panoptic format.

Streams: frames are read one at a time, run `batch_size` at a time, fused, written and dropped; only the small
per-image annotations stay until `panoptic.json` is written at the end. Resumable: a frame whose panoptic PNG exists
is not run again (its annotation is read back from the PNG) unless `overwrite`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lpsctl.atomic import atomic_path, write_bytes_atomic
from lpsctl.config import Config
from lpsctl.data.dataset import collate_batch, image_sample
from lpsctl.data.predictions import (
    panoptic_png_path,
    resize_prediction,
    segments_from_ids,
    write_panoptic,
    write_panoptic_json,
)
from lpsctl.data.sources import Frame, Source, frames_of, video_info
from lpsctl.data.transforms import build_eval_transform, decode_sizes
from lpsctl.engine.deploy import Network
from lpsctl.engine.fuse import empty_instances, fuse_one
from lpsctl.imagefile import png_bytes, read_panoptic_png
from lpsctl.postprocess.postprocessor import PanopticPostProcessor
from lpsctl.visualize import draw_overlay

log = logging.getLogger(__name__)
OVERLAY_FOLDER = "overlays"
DEFAULT_FPS = 25.0  # for a video that reports no frame rate


@dataclass
class PredictSummary:
    out_dir: Path
    written: int = 0  # frames run through the network
    skipped: int = 0  # frames whose result existed (resume)
    failed: list[str] = field(default_factory=list)  # "name: reason" of each unreadable file or frame
    videos: list[Path] = field(default_factory=list)  # overlaid videos written
    json_path: Path | None = None


@dataclass
class _Run:
    """What every frame of one `predict_sources` call shares."""

    network: Network
    postprocessor: PanopticPostProcessor
    config: Config
    out_dir: Path
    overlay: bool
    overwrite: bool
    input_size: tuple[int, int] | None
    summary: PredictSummary
    annotations: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)


def predict_sources(
    sources: Iterable[Source],
    network: Network,
    postprocessor: PanopticPostProcessor,
    config: Config,
    out_dir: Path,
    *,
    batch_size: int = 1,
    every: int = 1,
    overlay: bool = False,
    overwrite: bool = False,
    input_size: tuple[int, int] | None = None,
    progress: Callable[..., None] | None = None,
) -> PredictSummary:
    """Predict every frame of `sources`; write `out_dir/panoptic/*.png`, `out_dir/panoptic.json` (COCO panoptic:
    images, annotations, categories) and, with `overlay`, `out_dir/overlays/*.png` and one `{name}_overlay.mp4` per
    video at its frame rate. `input_size`: the fixed (height, width) of an exported network."""
    sources = list(sources)
    run = _Run(network, postprocessor, config, Path(out_dir), overlay, overwrite, input_size, PredictSummary(out_dir))
    total = sum(_frame_count(source, every) for source in sources)
    transform = build_eval_transform(config.data)
    done, start = 0, time.perf_counter()
    for source in sources:
        with _VideoOut(run, source) as video:
            pending: list[Frame] = []
            for frame in frames_of(source, every):
                if frame.rgb is None:
                    run.summary.failed.append(f"{frame.image_id}: {frame.error}")
                    log.warning("skipped %s", frame.error)
                    continue
                if not overwrite and panoptic_png_path(run.out_dir, frame.image_id).is_file():
                    done += _flush(run, pending, transform, video)
                    _reuse(run, frame, video)
                    done += 1
                    continue
                pending.append(frame)
                if len(pending) == batch_size:
                    done += _flush(run, pending, transform, video)
                if progress is not None:
                    progress("predict", done, max(total, done), f"{done / (time.perf_counter() - start):.1f} frames/s")
            done += _flush(run, pending, transform, video)
    run.summary.json_path = write_panoptic_json(run.out_dir, run.annotations, images=run.images)
    if progress is not None:
        progress("predict", done, max(total, done), f"{done / max(time.perf_counter() - start, 1e-9):.1f} frames/s")
    return run.summary


def _flush(run: _Run, pending: list[Frame], transform: Any, video: _VideoOut) -> int:
    """Run the pending frames as one batch, write their results; returns how many (the list is emptied)."""
    if not pending:
        return 0
    samples = [image_sample(frame.rgb, frame.image_id, transform) for frame in pending if frame.rgb is not None]
    batch = collate_batch(samples, run.config.data.size_divisor, size=run.input_size)
    outputs = run.network(batch.images)
    # an image above data.eval_max_size is decoded and fused at the size the network saw, then upsampled
    predictions = run.postprocessor(outputs, batch.image_sizes, decode_sizes(batch, run.config.data), batch.image_ids)
    for frame, prediction in zip(pending, predictions, strict=True):
        assert prediction.semantic_logits is not None  # the commands require a semantic head
        size = prediction.semantic_logits.shape[-2:]
        instances = prediction.instances if prediction.instances is not None else empty_instances(*size)
        panoptic = fuse_one(prediction.semantic_logits, instances, run.config.fusion)
        assert frame.rgb is not None
        panoptic = resize_prediction(panoptic, frame.rgb.shape[:2])
        annotation = write_panoptic(run.out_dir, frame.image_id, panoptic)
        _record(run, frame, annotation, panoptic.ids, video)
        run.summary.written += 1
    count = len(pending)
    pending.clear()
    return count


def _reuse(run: _Run, frame: Frame, video: _VideoOut) -> None:
    """A frame predicted by an earlier run: its annotation from the PNG, its overlay drawn again if asked for."""
    path = panoptic_png_path(run.out_dir, frame.image_id)
    ids = read_panoptic_png(path)
    annotation = {"image_id": frame.image_id, "file_name": path.name, "segments_info": segments_from_ids(ids)}
    _record(run, frame, annotation, ids, video)
    run.summary.skipped += 1


def _record(run: _Run, frame: Frame, annotation: dict[str, Any], ids: np.ndarray, video: _VideoOut) -> None:
    assert frame.rgb is not None
    height, width = ids.shape
    run.annotations.append(annotation)
    run.images.append({"id": frame.image_id, "file_name": frame.source.path.name, "height": height, "width": width})
    if run.overlay:
        picture = draw_overlay(frame.rgb, ids)
        overlay_path = run.out_dir / OVERLAY_FOLDER / f"{frame.image_id}_overlay.png"
        if run.overwrite or not overlay_path.is_file():
            write_bytes_atomic(overlay_path, png_bytes(picture))
        video.write(picture)


class _VideoOut:
    """The overlaid video of a video source (`{name}_overlay.mp4` at its frame rate), written through a temporary
    file; a no-op for images or without overlays."""

    def __init__(self, run: _Run, source: Source) -> None:
        self.run, self.source = run, source
        self.writer: cv2.VideoWriter | None = None
        self.enabled = run.overlay and source.video
        self.path = run.out_dir / f"{source.name}_overlay.mp4"
        self._temp: Any = None

    def __enter__(self) -> _VideoOut:
        return self

    def write(self, picture: np.ndarray) -> None:
        if not self.enabled:
            return
        if self.writer is None:
            fps = video_info(self.source.path).fps or DEFAULT_FPS
            self._temp = atomic_path(self.path)
            temp = self._temp.__enter__()
            height, width = picture.shape[:2]
            self.writer = cv2.VideoWriter(str(temp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
        self.writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))

    def __exit__(self, *exc: object) -> None:
        if self.writer is None:
            return
        self.writer.release()
        self._temp.__exit__(*exc)  # rename into place on success, remove on failure
        if exc[0] is None:
            self.run.summary.videos.append(self.path)


def _frame_count(source: Source, every: int) -> int:
    if not source.video:
        return 1
    frames = video_info(source.path).frames
    return -(-frames // every) if frames > 0 else 0
