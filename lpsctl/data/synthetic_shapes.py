"""Shapes of the synthetic Cityscapes-format dataset (SPEC §2): appearance palettes, the pinhole camera, polygon
geometry and silhouettes of things in metres (x right, y up, origin on the ground, facing right)."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# texture kinds the renderer knows
PLAIN, WINDOWS, TILES, FOLIAGE, STRIPES, SKY, ASPHALT = range(7)
# parts painted inside an object's own pixels (BODY = its base colour)
BODY, GLASS, DARK, LAMP, SKIN, SECONDARY, LIGHT, TAIL = range(8)
Part = tuple[int, np.ndarray]

HSVBox = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # (low, high) of hue, saturation, value
#: HSV ranges per appearance kind — wide on purpose, so a class is never a colour lookup (the `street` style; the
#: `basic` style of synthetic_scene gives each class its own range)
_PALETTES: dict[str, HSVBox] = {
    "sky": ((0.5, 0.68), (0.0, 0.55), (0.6, 1.0)),
    "building": ((0.0, 0.17), (0.0, 0.45), (0.25, 0.85)),
    "road": ((0.0, 1.0), (0.0, 0.12), (0.18, 0.55)),
    "sidewalk": ((0.0, 1.0), (0.0, 0.3), (0.4, 0.82)),
    "vegetation": ((0.14, 0.42), (0.25, 0.85), (0.12, 0.6)),
    "terrain": ((0.08, 0.33), (0.2, 0.7), (0.3, 0.72)),
    "structure": ((0.0, 1.0), (0.0, 0.35), (0.15, 0.8)),  # pole, wall, fence
    "sign": ((0.0, 1.0), (0.3, 1.0), (0.45, 1.0)),
    "dark": ((0.0, 1.0), (0.0, 0.4), (0.04, 0.35)),  # traffic-light housings, ego vehicle, tyres
    "vehicle": ((0.0, 1.0), (0.0, 0.85), (0.1, 0.95)),
    "human": ((0.0, 1.0), (0.0, 0.75), (0.08, 0.85)),
    "skin": ((0.02, 0.11), (0.2, 0.6), (0.3, 0.95)),
}


def sample_colour(rng: np.random.Generator, palette: str | HSVBox) -> np.ndarray:
    """float[3] RGB in 0-255 drawn from an HSV box (or the named palette's)."""
    hsv_box = _PALETTES[palette] if isinstance(palette, str) else palette
    hue, saturation, value = (rng.uniform(*bounds) for bounds in hsv_box)
    return 255.0 * np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


@dataclass
class SceneObject:
    """One polygon of the annotation, with what the renderer needs; `polygon` is exactly what goes into the JSON."""

    label: str
    polygon: list[list[int]]
    colour: np.ndarray
    colour2: np.ndarray
    texture: int = PLAIN
    period: float = 8.0  # texture period in pixels
    noise: float = 5.0  # texture noise amplitude (0-255 units)
    gradient: float = 0.15  # brightness difference top to bottom
    parts: list[Part] = field(default_factory=list)  # (part id, float[N, 2] image polygon), painted in order
    shadow: np.ndarray | None = None  # float[N, 2]: darkened on what lies under the object
    deleted: bool = False
    skin: np.ndarray = field(default_factory=lambda: np.array([200.0, 160.0, 130.0]))  # colour of SKIN parts


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at `elevation` metres above a flat road; `horizon`/`centre` are the vanishing point in pixels."""

    height: int
    width: int
    horizon: float
    centre: float
    focal: float
    elevation: float

    def project(
        self, lateral: np.ndarray | float, depth: np.ndarray | float, up: np.ndarray | float = 0.0
    ) -> np.ndarray:
        """float[..., 2] pixel (x, y) of points `lateral` m to the right, `depth` m ahead and `up` m above the road."""
        depth = np.asarray(depth, dtype=float)
        x = self.centre + self.focal * np.asarray(lateral) / depth
        return np.stack(
            np.broadcast_arrays(x, self.horizon + self.focal * (self.elevation - np.asarray(up)) / depth), -1
        )

    def nearest_visible_depth(self) -> float:
        """Depth (m) whose ground row is a little below the image bottom."""
        return self.focal * self.elevation / (1.08 * (self.height - self.horizon))


def clip_polygon(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman clip of float[N, 2] (x, y) to the pixel rectangle [0, width-1] × [0, height-1]."""
    for axis, limit, upper in ((0, 0.0, False), (0, width - 1.0, True), (1, 0.0, False), (1, height - 1.0, True)):
        if len(points) == 0:
            break
        inside = points[:, axis] <= limit if upper else points[:, axis] >= limit
        if inside.all():
            continue
        clipped = []
        for i in range(len(points)):
            current, previous = points[i], points[i - 1]
            if inside[i] != inside[i - 1]:
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                clipped.append(previous + t * (current - previous))
            if inside[i]:
                clipped.append(current)
        points = np.array(clipped).reshape(-1, 2)
    return points


def to_pixels(points: np.ndarray, width: int, height: int) -> list[list[int]] | None:
    """Clip, round to integer pixels (as Cityscapes stores polygons), drop repeats; None when nothing is left."""
    points = np.rint(clip_polygon(np.asarray(points, dtype=float), width, height)).astype(int)
    if len(points):
        points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]
    if len(points) < 3 or np.ptp(points[:, 0]) == 0 or np.ptp(points[:, 1]) == 0:
        return None
    return points.tolist()


def union_outline(polygons: list[np.ndarray], width: int, height: int) -> np.ndarray | None:
    """float[N, 2]: one polygon covering the union of overlapping silhouettes (traced column by column)."""
    clipped = [p for p in (clip_polygon(poly, width, height) for poly in polygons) if len(p) >= 3]
    if not clipped:
        return None
    origin = np.floor(np.vstack(clipped).min(0)).astype(int)
    size = np.ceil(np.vstack(clipped).max(0)).astype(int) - origin + 1
    mask_image = Image.new("1", (int(size[0]), int(size[1])), 0)
    draw = ImageDraw.Draw(mask_image)
    for poly in clipped:
        draw.polygon([tuple(p) for p in (poly - origin).tolist()], fill=1)
    mask = np.asarray(mask_image)
    columns = np.flatnonzero(mask.any(0))
    columns = np.unique(np.append(columns[:: max(1, len(columns) // 48)], columns[-1]))
    top = mask[:, columns].argmax(0)
    bottom = mask.shape[0] - 1 - mask[::-1, columns].argmax(0)
    outline = np.concatenate([np.stack([columns, top], 1), np.stack([columns, bottom], 1)[::-1]])
    return outline.astype(float) + origin


def ellipse(cx: float, cy: float, rx: float, ry: float, count: int = 12) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], 1)


def arc(cx: float, cy: float, radius: float, start_degrees: float, end_degrees: float, count: int = 7) -> np.ndarray:
    angle = np.radians(np.linspace(start_degrees, end_degrees, count))
    return np.stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)], 1)


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def mirrored(right_half: np.ndarray) -> np.ndarray:
    """A left-right symmetric outline from its right half listed top-centre → bottom-centre."""
    left = right_half[::-1] * np.array([-1.0, 1.0])
    return np.vstack([right_half, left[1:-1]])


@dataclass
class Silhouette:
    """A thing in metres: outline, painted parts, and an optional licence-plate polygon."""

    outline: np.ndarray
    parts: list[Part] = field(default_factory=list)
    plate: np.ndarray | None = None
    half_length: float = 1.0  # metres, for the ground shadow


def make_object(
    rng: np.random.Generator, label: str, polygon: np.ndarray, camera: Camera, palette: str, **render: object
) -> SceneObject | None:
    """A SceneObject with colours from `palette`; None when the polygon falls outside the image."""
    pixels = to_pixels(polygon, camera.width, camera.height)
    if pixels is None:
        return None
    colour = sample_colour(rng, palette)
    colour2 = colour * rng.uniform(0.35, 0.8) if rng.random() < 0.6 else sample_colour(rng, palette)
    settings: dict = {"noise": rng.uniform(2, 9), "gradient": rng.uniform(-0.1, 0.35)} | render
    return SceneObject(label, pixels, colour, colour2, skin=sample_colour(rng, "skin"), **settings)


# --- silhouettes (metres, facing right, y up) ---------------------------------------------------------------------


def _side_body(top: list[tuple[float, float]], wheels: list[float], radius: float) -> np.ndarray:
    """Top profile rear → front, then back along the sills with the lower half of every wheel below them."""
    bottom = [np.array([[top[-1][0], radius]])]
    bottom += [arc(x, radius, radius, 0, -180) for x in sorted(wheels, reverse=True)]
    bottom.append(np.array([[top[0][0], radius]]))
    return np.vstack([np.array(top, dtype=float), *bottom])


def _wheel_parts(wheels: list[float], radius: float) -> list[Part]:
    parts: list[Part] = []
    for x in wheels:
        parts += [(DARK, ellipse(x, radius, radius, radius)), (LIGHT, ellipse(x, radius, 0.45 * radius, 0.45 * radius))]
    return parts


def car_side(rng: np.random.Generator) -> Silhouette:
    length, radius, roof = rng.uniform(3.7, 4.9), rng.uniform(0.3, 0.36), rng.uniform(1.35, 1.8)
    waist, x0, x1 = rng.uniform(0.52, 0.66) * roof, -length / 2, length / 2
    trunk, back_roof = x0 + rng.uniform(0.03, 0.18) * length, rng.uniform(-0.3, -0.12) * length
    front_roof = rng.uniform(0.05, 0.18) * length
    screen = front_roof + rng.uniform(0.12, 0.2) * length
    top = [(x0, radius), (x0 - 0.03, waist * 0.95), (trunk, waist), (back_roof, roof), (front_roof, roof),
           (screen, waist * 1.02), (x1, waist * rng.uniform(0.8, 0.95)), (x1 + 0.02, radius)]  # fmt: skip
    wheels = [x0 + 0.2 * length, x1 - 0.18 * length]
    glass = np.array([[trunk + 0.12, waist + 0.06], [back_roof + 0.08, roof - 0.07], [front_roof, roof - 0.07],
                      [screen - 0.1, waist + 0.06]])  # fmt: skip
    lamps = [
        (LAMP, box(x1 - 0.25, waist * 0.7, x1, waist * 0.85)),
        (TAIL, box(x0, waist * 0.75, x0 + 0.15, waist * 0.9)),
    ]
    return Silhouette(_side_body(top, wheels, radius), [(GLASS, glass), *lamps, *_wheel_parts(wheels, radius)],
                      half_length=length / 2)  # fmt: skip


def car_rear(rng: np.random.Generator, front: bool) -> Silhouette:
    width, roof = rng.uniform(1.65, 2.0), rng.uniform(1.35, 1.8)
    waist, half = rng.uniform(0.52, 0.66) * roof, width / 2
    right = np.array([[0, roof], [0.36 * width, roof * 0.98], [0.44 * width, waist * 1.04], [half, waist],
                      [half, 0.3], [0.47 * width, 0.27], [0.47 * width, 0], [0.3 * width, 0], [0.3 * width, 0.2],
                      [0, 0.2]])  # fmt: skip
    glass = np.array([[-0.33 * width, roof * 0.94], [0.33 * width, roof * 0.94], [0.41 * width, waist * 1.06],
                      [-0.41 * width, waist * 1.06]])  # fmt: skip
    lamp = LAMP if front else TAIL
    plate = box(-0.26, 0.3, 0.26, 0.42)
    parts: list[Part] = [(GLASS, glass), (SECONDARY, box(-half, 0.2, half, 0.36)), (LIGHT, plate)]
    parts += [(lamp, box(s * 0.3 * width, waist * 0.72, s * 0.46 * width, waist * 0.9)) for s in (-1, 1)]
    parts += [(DARK, box(s * 0.3 * width, 0, s * 0.47 * width, 0.27)) for s in (-1, 1)]
    return Silhouette(mirrored(right), parts, plate=plate, half_length=half)


def truck_side(rng: np.random.Generator) -> Silhouette:
    length, cab, height = rng.uniform(6, 9), rng.uniform(1.8, 2.4), rng.uniform(2.8, 3.8)
    cab_height, radius, x0, x1 = rng.uniform(2.4, 3.0), 0.5, -length / 2, length / 2
    top = [(x0, radius), (x0, height), (x1 - cab - 0.1, height), (x1 - cab - 0.1, cab_height),
           (x1 - 0.5, cab_height), (x1, cab_height * 0.62), (x1, radius)]  # fmt: skip
    wheels = [x0 + 0.15 * length, x0 + 0.32 * length, x1 - 0.6 * cab]
    cab_box = box(x1 - cab, radius, x1, cab_height - 0.05)
    window = np.array([[x1 - 0.9, cab_height * 0.65], [x1 - 0.05, cab_height * 0.65], [x1 - 0.5, cab_height - 0.15],
                       [x1 - 0.9, cab_height - 0.15]])  # fmt: skip
    parts = [(SECONDARY, cab_box), (GLASS, window), *_wheel_parts(wheels, radius)]
    return Silhouette(_side_body(top, wheels, radius), parts, half_length=length / 2)


def box_vehicle_rear(rng: np.random.Generator, kind: str, front: bool) -> Silhouette:
    """Truck, bus or tram seen from behind or ahead: a tall box with a rounded roof."""
    width = rng.uniform(2.4, 2.6) if kind != "train" else rng.uniform(2.5, 2.8)
    height = {"truck": rng.uniform(2.8, 3.8), "bus": rng.uniform(3.0, 3.4), "train": rng.uniform(3.3, 3.8)}[kind]
    half, corner = width / 2, rng.uniform(0.05, 0.3)
    right = np.vstack([[[0, height]], arc(half - corner, height - corner, corner, 90, 0, 4),
                       [[half, 0.5], [0.46 * width, 0.5], [0.46 * width, 0], [0.3 * width, 0], [0.3 * width, 0.4],
                        [0, 0.4]]])  # fmt: skip
    glass_bottom = 0.5 * height if (front or kind != "truck") else height
    parts: list[Part] = [(GLASS, box(-0.44 * width, glass_bottom, 0.44 * width, height - 0.25))]
    parts += [(LAMP if front else TAIL, box(s * 0.3 * width, 0.55, s * 0.44 * width, 0.75)) for s in (-1, 1)]
    parts += [(DARK, box(s * 0.3 * width, 0, s * 0.46 * width, 0.5)) for s in (-1, 1)]
    plate = box(-0.26, 0.6, 0.26, 0.72)
    return Silhouette(mirrored(right), [*parts, (LIGHT, plate)], plate=plate, half_length=half)


def long_vehicle_side(rng: np.random.Generator, kind: str) -> Silhouette:
    """Bus or tram from the side: long box, window band, doors."""
    length = rng.uniform(10, 13) if kind == "bus" else rng.uniform(15, 26)
    height, radius = rng.uniform(3.0, 3.6), 0.5 if kind == "bus" else 0.42
    x0, x1 = -length / 2, length / 2
    top = [(x0, radius), (x0, 0.95 * height), (x0 + 0.3, height), (x1 - 0.5, height), (x1, 0.9 * height), (x1, radius)]
    wheels = [x0 + 2.2, x1 - 2.4] if kind == "bus" else [x0 + 1.5, x0 + 3.0, x1 - 3.0, x1 - 1.5]
    parts: list[Part] = [(GLASS, box(x0 + 0.4, 0.55 * height, x1 - 0.1, 0.88 * height))]
    parts += [(SECONDARY, box(x, 0.15, x + 1.1, 0.85 * height)) for x in np.linspace(x0 + 3, x1 - 3, 3)]
    return Silhouette(_side_body(top, wheels, radius), parts + _wheel_parts(wheels, radius), half_length=length / 2)


def person(rng: np.random.Generator) -> Silhouette:
    """Head, shoulders, arms along the body, two legs (apart when walking)."""
    height = rng.uniform(1.5, 1.95)
    width, stride, head = rng.uniform(0.22, 0.3), rng.uniform(0.0, 0.12), rng.uniform(0.06, 0.07)
    right = np.vstack([arc(0, 1 - head, head, 90, -10, 4),
                       [[0.04, 0.85], [width / 2, 0.82], [width / 2 + 0.01, 0.5], [0.37 * width, 0.47],
                        [0.34 * width + stride, 0.0], [0.03 + stride / 2, 0.0], [0, 0.45]]])  # fmt: skip
    outline = mirrored(right) * height
    legs = np.array([[-0.34 * width - stride, 0], [0.34 * width + stride, 0], [0.36 * width, 0.48],
                     [-0.36 * width, 0.48]]) * height  # fmt: skip
    parts: list[Part] = [(SECONDARY, legs), (SKIN, ellipse(0, (1 - head) * height, head * height, head * height))]
    return Silhouette(outline, parts, half_length=0.3)


def two_wheeler(rng: np.random.Generator, motor: bool) -> Silhouette:
    """Bicycle or motorcycle from the side: two wheels joined by the frame (filled, as annotators draw them)."""
    radius = rng.uniform(0.3, 0.36) if not motor else rng.uniform(0.3, 0.34)
    base = rng.uniform(1.0, 1.15) if not motor else rng.uniform(1.3, 1.5)
    rear, front = -base / 2, base / 2
    body = (
        [(rear + 0.2, 0.95), (front - 0.1, 1.05)]
        if not motor
        else [(rear + 0.1, 0.8), (0.0, 0.85), (front - 0.15, 1.05)]
    )
    outline = np.vstack([arc(rear, radius, radius, -60, -300, 9), body, arc(front, radius, radius, 120, -120, 9),
                         [[0.0, 0.3 if not motor else 0.25]]])  # fmt: skip
    parts: list[Part] = []
    for x in (rear, front):
        parts += [(DARK, ellipse(x, radius, radius, radius)), (GLASS, ellipse(x, radius, 0.75 * radius, 0.75 * radius))]
    if motor:
        parts.append(
            (BODY, np.array([[rear + 0.15, 0.45], [front - 0.3, 0.45], [front - 0.1, 0.9], [rear + 0.1, 0.78]]))
        )
    return Silhouette(outline, parts, half_length=base / 2 + radius)


def rider(rng: np.random.Generator, motor: bool) -> Silhouette:
    """A person seated on a two-wheeler (same frame as `two_wheeler`), leaning towards the handlebar."""
    hip = np.array([-0.2, 1.0]) if not motor else np.array([-0.05, 0.9])
    shoulder = hip + [rng.uniform(0.2, 0.4), rng.uniform(0.5, 0.6)]
    hand, foot = np.array([0.45, 1.02]), np.array([0.02, 0.3]) if not motor else np.array([0.15, 0.4])
    knee, head = (hip + foot) / 2 + [0.18, 0.1], rng.uniform(0.1, 0.12)
    neck = shoulder + [0.04, 0.1]
    head_x, head_y = neck + [0, head]
    outline = np.vstack([[hip + [-0.13, -0.04], shoulder + [-0.13, 0.05]], arc(head_x, head_y, head, 200, -20, 6),
                         [shoulder + [0.1, -0.02], hand + [0, 0.05], hand + [0, -0.04], shoulder + [0.02, -0.22],
                          hip + [0.15, 0.06], knee + [0.07, 0.04], foot + [0.1, 0], foot + [-0.06, 0],
                          knee + [-0.06, -0.08], hip + [0, -0.12]]])  # fmt: skip
    legs = np.array([hip + [-0.05, 0.08], knee + [0.07, 0.04], foot + [0.1, 0], foot + [-0.06, 0], hip + [0, -0.12]])
    parts: list[Part] = [(SECONDARY, legs), (SKIN, ellipse(head_x, head_y, head, head))]
    return Silhouette(outline, parts, half_length=0.5)
