"""Overlays a person can read: stuff in the Cityscapes palette, each instance its own colour with a contour and a
class label, a legend of the classes present (a box inside the overlay's corner, so the PNG keeps the input's size);
optionally side by side with the input."""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label
from PIL import Image, ImageDraw, ImageFont

from lpsctl.labels import INSTANCE_OFFSET, label_name

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont
VOID_COLOR = (0, 0, 0)


def instance_color(segment_id: int) -> tuple[int, int, int]:
    """A stable, saturated colour per instance id (golden-ratio hue steps keep neighbours apart)."""
    hue = (segment_id % INSTANCE_OFFSET * 0.618033988749895 + (segment_id // INSTANCE_OFFSET) * 0.13) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def color_panoptic(ids: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[int, int, int]]]:
    """uint8[H, W, 3] colours of a Cityscapes panoptic id map (stuff id = label id, thing id = label id·1000 + k)
    and the colour of each segment id."""
    unique, inverse = np.unique(ids, return_inverse=True)
    colors: dict[int, tuple[int, int, int]] = {}
    for segment_id in unique.tolist():
        if segment_id == 0:
            colors[segment_id] = VOID_COLOR
        elif segment_id >= INSTANCE_OFFSET:
            colors[segment_id] = instance_color(segment_id)
        else:
            colors[segment_id] = tuple(id2label[segment_id].color) if segment_id in id2label else VOID_COLOR
    table = np.array([colors[s] for s in unique.tolist()], dtype=np.uint8).reshape(-1, 3)
    return table[inverse.reshape(ids.shape)], colors


def draw_overlay(image: np.ndarray, ids: np.ndarray, *, alpha: float = 0.55, side_by_side: bool = False) -> np.ndarray:
    """image: uint8[H, W, 3] RGB; ids: int[H, W] panoptic ids at the same size.

    Returns uint8[H, W, 3] (uint8[H, 2W, 3] with `side_by_side`: the input left, the overlay right): the input
    blended with the segment colours (`alpha` of the colour), white instance contours, a class tag on every
    instance and a legend box of the classes present in the bottom-right corner of the overlay.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8[H, W, 3] RGB, got {image.dtype}{list(image.shape)}")
    if image.shape[:2] != ids.shape:
        raise ValueError(f"image {image.shape[:2]} and panoptic ids {ids.shape} differ in size")
    colored, colors = color_panoptic(ids)
    blend = (image.astype(np.float32) * (1 - alpha) + colored.astype(np.float32) * alpha).astype(np.uint8)
    things = [s for s in colors if s >= INSTANCE_OFFSET]
    # one bounding-box pass for all instances instead of a full-image comparison per instance
    boxes = _segment_boxes(ids, things)
    thickness = max(1, round(ids.shape[0] / 400))
    for segment_id, (x0, y0, x1, y1) in zip(things, boxes, strict=True):
        mask = np.ascontiguousarray(ids[y0:y1, x0:x1] == segment_id, dtype=np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
        cv2.drawContours(blend, contours, -1, (255, 255, 255), thickness=thickness)
    canvas = Image.fromarray(blend)
    draw = ImageDraw.Draw(canvas, "RGBA")
    font = _font(ids.shape[0])
    for segment_id, (x0, y0, _, _) in zip(things, boxes, strict=True):
        _tag(draw, (x0, y0), label_name(segment_id // INSTANCE_OFFSET), colors[segment_id], font)
    present = sorted({s // INSTANCE_OFFSET if s >= INSTANCE_OFFSET else s for s in colors if s})
    _legend(draw, canvas.size, [i for i in present if i in id2label], font)
    overlay = np.asarray(canvas)
    return np.concatenate([image, overlay], axis=1) if side_by_side else overlay


def _segment_boxes(ids: np.ndarray, segment_ids: list[int]) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) end-exclusive box of each segment id present in `ids`."""
    if not segment_ids:
        return []
    wanted = np.asarray(segment_ids)
    order = np.argsort(wanted)
    position = np.clip(np.searchsorted(wanted[order], ids), 0, len(wanted) - 1)
    index = np.where(wanted[order][position] == ids, order[position], -1)
    rows = np.zeros((len(wanted), ids.shape[0]), dtype=bool)
    columns = np.zeros((len(wanted), ids.shape[1]), dtype=bool)
    ys, xs = np.nonzero(index >= 0)
    rows[index[ys, xs], ys] = True
    columns[index[ys, xs], xs] = True
    boxes = []
    for row, column in zip(rows, columns, strict=True):
        y, x = np.flatnonzero(row), np.flatnonzero(column)
        boxes.append((int(x[0]), int(y[0]), int(x[-1]) + 1, int(y[-1]) + 1))
    return boxes


def _tag(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, color: tuple, font: Font) -> None:
    """The class name on the instance's colour, just above its box (inside it at the top edge of the image)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = xy[0], max(0, xy[1] - (bottom - top) - 3)
    draw.rectangle((x, y, x + right - left + 2, y + bottom - top + 2), fill=color)
    draw.text((x + 1 - left, y + 1 - top), text, fill=(0, 0, 0), font=font)


def _legend(draw: ImageDraw.ImageDraw, size: tuple[int, int], label_ids: list[int], font: Font) -> None:
    """A translucent white box in the bottom-right corner: a swatch and the name of every class present, in as
    many columns as the height needs (classes that do not fit the width are left out)."""
    if not label_ids:
        return
    width, height = size
    names = [label_name(i) for i in label_ids]
    text_height = max(math.ceil(draw.textbbox((0, 0), "Ag", font=font)[3]), 1)
    line, pad = text_height + 3, 3
    text_width = max(math.ceil(draw.textbbox((0, 0), name, font=font)[2]) for name in names)
    column_width = text_height + 4 + text_width + 2 * pad
    per_column = max(1, (height - 2 * pad) // line)
    columns = min(-(-len(names) // per_column), max(1, (width - 2 * pad) // column_width))
    shown = min(len(names), columns * per_column)
    rows = min(per_column, shown)
    box_width, box_height = columns * column_width + pad, rows * line + 2 * pad
    left, top = max(0, width - box_width), max(0, height - box_height)
    draw.rectangle((left, top, width - 1, height - 1), fill=(255, 255, 255, 200))
    for index in range(shown):
        x = left + pad + (index // per_column) * column_width
        y = top + pad + (index % per_column) * line
        draw.rectangle(
            (x, y + 1, x + text_height - 1, y + text_height), fill=id2label[label_ids[index]].color, outline=(0, 0, 0)
        )
        draw.text((x + text_height + 4, y), names[index], fill=(0, 0, 0), font=font)


def _font(image_height: int) -> Font:
    size = max(9, round(image_height / 40))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()
