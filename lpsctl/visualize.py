"""Overlays a person can read: stuff in the Cityscapes palette, each instance its own colour with a contour and a
class label, a legend of the classes present; optionally side by side with the input."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label
from PIL import Image, ImageDraw, ImageFont

VOID_COLOR = (0, 0, 0)


def instance_color(segment_id: int) -> tuple[int, int, int]:
    """A stable, saturated colour per instance id (golden-ratio hue steps keep neighbours apart)."""
    hue = (segment_id % 1000 * 0.618033988749895 + (segment_id // 1000) * 0.13) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def color_panoptic(ids: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[int, int, int]]]:
    """uint8[H, W, 3] colours of a Cityscapes panoptic id map (stuff id = label id, thing id = label id·1000 + k)
    and the colour of each segment id."""
    unique, inverse = np.unique(ids, return_inverse=True)
    colors = {}
    for segment_id in unique.tolist():
        if segment_id == 0:
            colors[segment_id] = VOID_COLOR
        elif segment_id >= 1000:
            colors[segment_id] = instance_color(segment_id)
        else:
            colors[segment_id] = tuple(id2label[segment_id].color) if segment_id in id2label else VOID_COLOR
    table = np.array([colors[s] for s in unique.tolist()], dtype=np.uint8)
    return table[inverse.reshape(ids.shape)], colors


def draw_overlay(image: np.ndarray, ids: np.ndarray, *, alpha: float = 0.55, side_by_side: bool = False) -> np.ndarray:
    """image: uint8[H, W, 3] RGB; ids: int[H, W] panoptic ids at the same size. Returns uint8 RGB (H, W or 2W)."""
    if image.shape[:2] != ids.shape:
        raise ValueError(f"image {image.shape[:2]} and panoptic ids {ids.shape} differ in size")
    colored, colors = color_panoptic(ids)
    blend = (image.astype(np.float32) * (1 - alpha) + colored.astype(np.float32) * alpha).astype(np.uint8)
    things = [s for s in colors if s >= 1000]
    for segment_id in things:
        mask = (ids == segment_id).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(blend, contours, -1, (255, 255, 255), thickness=max(1, round(ids.shape[0] / 400)))
    canvas = Image.fromarray(blend)
    draw = ImageDraw.Draw(canvas)
    font = _font(ids.shape[0])
    for segment_id in things:
        rows, cols = np.nonzero(ids == segment_id)
        if rows.size:
            _label(draw, (int(cols.min()), int(rows.min())), id2label[segment_id // 1000].name, colors[segment_id], font)
    overlay = np.asarray(canvas)
    if side_by_side:
        overlay = np.concatenate([image, overlay], axis=1)
    return _with_legend(overlay, sorted({s // 1000 if s >= 1000 else s for s in colors if s}), font)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, color: tuple, font: ImageFont.ImageFont) -> None:
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    y = max(0, xy[1] - (bottom - top) - 2)
    draw.rectangle((left, y, right + 2, y + bottom - top + 2), fill=color)
    draw.text((xy[0] + 1, y), text, fill=(0, 0, 0), font=font)


def _with_legend(overlay: np.ndarray, label_ids: list[int], font: ImageFont.ImageFont) -> np.ndarray:
    """A strip under the overlay with a swatch and the name of every class present."""
    height, width = overlay.shape[:2]
    row = max(12, round(height / 30))
    entries = [(id2label[i].name, tuple(id2label[i].color)) for i in label_ids if i in id2label]
    per_row = max(1, width // (row * 9))
    rows = max(1, -(-len(entries) // per_row))
    legend = Image.new("RGB", (width, rows * (row + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for index, (name, color) in enumerate(entries):
        x, y = (index % per_row) * row * 9 + 4, (index // per_row) * (row + 4) + 4
        draw.rectangle((x, y, x + row, y + row), fill=color, outline=(0, 0, 0))
        draw.text((x + row + 4, y), name, fill=(0, 0, 0), font=font)
    return np.concatenate([overlay, np.asarray(legend)], axis=0)


def _font(image_height: int) -> ImageFont.ImageFont:
    size = max(10, round(image_height / 40))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()
