"""Silhouettes and perspective street layout of the synthetic Cityscapes-format dataset (SPEC §2): shapes in metres
(x right, y up, origin on the ground) projected by a pinhole camera, so objects lower in the image are bigger."""

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

#: (hue, saturation, value) ranges per appearance kind — wide on purpose, so a class is never a colour lookup
HSVBox = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # (low, high) of hue, saturation, value
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


# --- layout ---------------------------------------------------------------------------------------------------------

_THING_PROBABILITIES = {"car": 0.4, "person": 0.24, "rider": 0.09, "bicycle": 0.05, "truck": 0.06, "bus": 0.06,
                        "motorcycle": 0.05, "train": 0.05}  # fmt: skip
MAX_THINGS = 12  # thing instances per image (crowd groups aside)
#: target number of thing instances per image, 0 … MAX_THINGS
_COUNT_PROBABILITIES = (0.06, 0.07, 0.09, 0.1, 0.11, 0.11, 0.1, 0.09, 0.08, 0.06, 0.05, 0.04, 0.04)
#: typical length (m) of a thing seen from the side
_SIDE_LENGTHS = {"car": 4.5, "truck": 7.5, "bus": 11.5, "train": 20.0}
Unit = tuple[float, list[SceneObject]]  # (depth in metres, objects drawn together in this order)


@dataclass(frozen=True)
class Style:
    """What the streets of a dataset may hold."""

    things: tuple[tuple[str, float], ...]  # (thing class, probability of each new thing)
    counts: tuple[float, ...]  # probability of 0, 1, 2, … thing instances per image (crowds aside)
    furniture: bool  # poles with traffic signs and lights, trees on the sidewalks
    extras: bool  # fences, walls, terrain (parks and verges)
    crowds: bool  # cargroup / persongroup polygons
    max_depth: float = 55.0  # metres: the farthest a thing stands (its smallest size in the image)
    # (label, HSV box) colours per class; empty: the wide appearance palettes shared by several classes
    class_colours: tuple[tuple[str, HSVBox], ...] = ()

    @property
    def thing_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.things)


#: `street`: all 19 classes, crowds and clutter, 0-12 things of 8 classes, colours that overlap between classes (tests,
#: a benchmark-like mix); `basic`: road, sidewalk, building, vegetation, sky, 1-5 cars and people within 20 m, each
#: class in its own colour range: learnable from scratch in a few CPU minutes (the demo)
STYLES = {
    "street": Style(tuple(_THING_PROBABILITIES.items()), _COUNT_PROBABILITIES, True, True, True),
    "basic": Style(
        (("car", 0.55), ("person", 0.45)),
        (0, 0.2, 0.25, 0.25, 0.2, 0.1),
        furniture=False,
        extras=False,
        crowds=False,
        max_depth=20.0,  # people ≥ 20 % of the image height (24 px at 128×256)
        class_colours=(
            ("sky", ((0.55, 0.62), (0.3, 0.5), (0.75, 0.95))),
            ("building", ((0.05, 0.1), (0.3, 0.5), (0.45, 0.75))),
            ("road", ((0.0, 1.0), (0.0, 0.06), (0.25, 0.4))),
            ("sidewalk", ((0.9, 1.0), (0.15, 0.3), (0.6, 0.8))),
            ("vegetation", ((0.25, 0.35), (0.5, 0.8), (0.25, 0.5))),
            ("car", ((0.55, 0.75), (0.6, 0.9), (0.35, 0.8))),
            ("person", ((0.95, 1.05), (0.6, 0.9), (0.5, 0.9))),
        ),
    ),
}


@dataclass(frozen=True)
class Street:
    camera: Camera
    road: tuple[float, float]  # lateral positions (m) of the left and right kerbs
    facades: tuple[float, float]  # lateral positions (m) of the building fronts
    end: float  # depth (m) where the street ends
    style: Style = STYLES["street"]


def place(points: np.ndarray, camera: Camera, lateral: float, depth: float, mirror: bool = False) -> np.ndarray:
    """float[N, 2] metres (x right, y up, origin on the ground) → image pixels for an object standing at (lateral,
    depth); `mirror` turns it to face left."""
    scale = camera.focal / depth
    return camera.project(lateral, depth) + points * np.array([-scale if mirror else scale, -scale])


def wall(camera: Camera, lateral: tuple[float, float], depth: tuple[float, float], heights: np.ndarray) -> np.ndarray:
    """An upright surface standing on the ground line from (lateral0, depth0) to (lateral1, depth1); `heights` are
    sampled evenly along it."""
    t = np.linspace(0, 1, len(heights))
    laterals, depths = lateral[0] + t * (lateral[1] - lateral[0]), depth[0] + t * (depth[1] - depth[0])
    return np.vstack([camera.project(laterals, depths), camera.project(laterals, depths, heights)[::-1]])


def ground(camera: Camera, lateral: tuple[float, float], depth: tuple[float, float]) -> np.ndarray:
    return camera.project(np.array(lateral)[[0, 1, 1, 0]], np.array(depth)[[0, 0, 1, 1]])


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(max(high, low * 1.01)))))


def make_scene(
    rng: np.random.Generator, height: int, width: int, featured: tuple[str, ...] = (), style: Style = STYLES["street"]
) -> list[SceneObject]:
    """All objects of one street image in drawing order (later over earlier). The first things are of the `featured`
    classes, placed where they stay visible (so that even a small dataset holds every class)."""
    horizon, centre = height * rng.uniform(0.34, 0.48), width * rng.uniform(0.38, 0.62)
    focal = 1.1 * min(width, 2 * height) * rng.uniform(0.9, 1.1)  # Cityscapes: ~2260 px for 2048 px width
    camera = Camera(height, width, horizon, centre, focal, elevation=rng.uniform(1.2, 1.6))
    road = (-rng.uniform(3.5, 9.0), rng.uniform(3.5, 9.0))
    facades = (road[0] - rng.uniform(2, 6), road[1] + rng.uniform(2, 6))
    street = Street(camera, road, facades, rng.uniform(60, 250), style)
    objects = _background(rng, street)
    units = (_furniture(rng, street) if style.furniture else []) + _things(rng, street, featured)
    for _, unit in sorted(units, key=lambda item: -item[0]):
        objects += unit
    objects += _void(rng, camera)
    colours = dict(style.class_colours)
    for obj in objects:  # a style with its own class colours repaints what it lists
        if obj is not None and obj.label in colours:
            obj.colour = sample_colour(rng, colours[obj.label])
            obj.colour2 = obj.colour * rng.uniform(0.35, 0.8)
    if rng.random() < 0.35:  # annotators' deleted polygons: in the JSON, drawn nowhere
        ghost = make_object(rng, "car", place(car_side(rng).outline, camera, 0, rng.uniform(8, 30)), camera, "vehicle")
        if ghost is not None:
            ghost.deleted = True
            objects.insert(int(rng.integers(1, len(objects) + 1)), ghost)
    return [obj for obj in objects if obj is not None]


def _background(rng: np.random.Generator, street: Street) -> list[SceneObject | None]:
    camera, (left, right), (facade_left, facade_right) = street.camera, street.road, street.facades
    near, far = 0.3, 3000.0
    sky_box = box(-1, -1, camera.width, camera.horizon + 2)
    objects = [make_object(rng, "sky", sky_box, camera, "sky", texture=SKY, gradient=rng.uniform(-0.4, 0.0))]
    edges = np.concatenate([[facade_left], np.sort(rng.uniform(facade_left, facade_right, rng.integers(1, 4))),
                            [facade_right]])  # fmt: skip
    for lateral0, lateral1 in zip(edges[:-1], edges[1:], strict=True):
        label = "building" if rng.random() < 0.75 else "vegetation"
        heights = np.full(2, rng.uniform(8, 30)) if label == "building" else rng.uniform(5, 14, 6)
        objects.append(_surface(rng, street, label, wall(camera, (lateral0, lateral1), (street.end,) * 2, heights)))
    extras = street.style.extras
    parks = [rng.random() < 0.3 for _ in range(2)] if extras else [False, False]
    for side, (facade, kerb) in enumerate(((facade_left, left), (facade_right, right))):
        outer = facade - 60 if side == 0 else facade + 60
        if parks[side]:
            objects.append(_surface(rng, street, "terrain", ground(camera, (outer, facade), (near, far))))
        objects.append(_surface(rng, street, "sidewalk", ground(camera, (facade, kerb), (near, far))))
        if extras and rng.random() < 0.35:
            strip = kerb + (-1 if side == 0 else 1) * np.array([rng.uniform(0.8, 2.0), 0.2])
            depth = rng.uniform(near + 2, 25)
            objects.append(_surface(rng, street, "terrain", ground(camera, tuple(strip), (depth, depth + 40))))
    objects.append(_road(rng, street, near, far))
    for side, facade in enumerate(street.facades):
        objects += _facades(rng, street, facade, parks[side])
        if extras and rng.random() < 0.3:
            label, lateral = ("fence", "wall")[int(rng.random() < 0.4)], facade + (0.3 if side == 0 else -0.3)
            start = rng.uniform(2, 15)
            polygon = wall(
                camera, (lateral,) * 2, (start, start + rng.uniform(10, 50)), np.full(2, rng.uniform(0.8, 2))
            )
            objects.append(_surface(rng, street, label, polygon))
    return objects


def _surface(rng: np.random.Generator, street: Street, label: str, polygon: np.ndarray) -> SceneObject | None:
    """A stuff region with the texture its class usually has (scaled to the region's size)."""
    camera = street.camera
    size = float(np.clip(np.ptp(polygon[:, 1]) if len(polygon) else 1.0, 4, camera.height))
    palette, texture, period = {
        "building": ("building", WINDOWS, rng.uniform(0.08, 0.2) * size),
        "vegetation": ("vegetation", FOLIAGE, 4.0),
        "terrain": ("terrain", FOLIAGE, 3.0),
        "sidewalk": ("sidewalk", TILES, rng.uniform(0.03, 0.08) * camera.height),
        "fence": ("structure", STRIPES, rng.uniform(2.0, 6.0)),
        "wall": ("structure", PLAIN, 8.0),
        "road": ("road", ASPHALT, 8.0),
    }[label]
    return make_object(rng, label, polygon, camera, palette, texture=texture, period=max(period, 3.0))


def _road(rng: np.random.Generator, street: Street, near: float, far: float) -> SceneObject | None:
    """Asphalt with dashed lane lines and, sometimes, a zebra crossing (painted parts of the road object)."""
    camera, (left, right) = street.camera, street.road
    road = _surface(rng, street, "road", ground(camera, (left, right), (near, far)))
    if road is None:
        return None
    lanes = max(1, round((right - left) / rng.uniform(2.8, 3.6)))
    dash, gap = rng.uniform(2, 4), rng.uniform(4, 9)
    starts = np.arange(rng.uniform(0, dash + gap), 120, dash + gap)
    for lateral in np.linspace(left, right, lanes + 1)[1:-1]:
        road.parts += [(LIGHT, ground(camera, (lateral - 0.07, lateral + 0.07), (z, z + dash))) for z in starts]
    if rng.random() < 0.25:
        depth = log_uniform(rng, camera.nearest_visible_depth() * 1.5, 30)
        stripes = np.arange(left + 0.3, right - 0.3, 1.0)
        road.parts += [(LIGHT, ground(camera, (x, x + 0.5), (depth, depth + 3))) for x in stripes]
    return road


def _facades(rng: np.random.Generator, street: Street, facade: float, park: bool) -> list[SceneObject | None]:
    """Building fronts along one side (row houses of varying height, hedges in the gaps) or a park's tree line."""
    camera, objects, depth = street.camera, [], 0.5
    while depth < street.end:
        stop = min(depth + rng.uniform(6, 25), street.end)
        if park or rng.random() < 0.15:
            lateral = facade + (rng.uniform(0, 6) if park else 0) * np.sign(facade)
            heights = rng.uniform(3, 9 if not park else 14, 8)
            objects.append(_surface(rng, street, "vegetation", wall(camera, (lateral,) * 2, (depth, stop), heights)))
        else:
            heights = np.full(2, rng.uniform(6, 28))
            objects.append(_surface(rng, street, "building", wall(camera, (facade,) * 2, (depth, stop), heights)))
        depth = stop
    return objects[::-1]


def _furniture(rng: np.random.Generator, street: Street) -> list[Unit]:
    """Poles (some carrying a traffic sign or light) and trees on the sidewalks, to be depth-sorted with things."""
    camera, units = street.camera, []
    nearest = camera.nearest_visible_depth()
    for index in range(int(rng.integers(1, 6)) + int(rng.integers(0, 5))):
        side = int(rng.integers(0, 2))
        kerb, facade = street.road[side], street.facades[side]
        depth = log_uniform(rng, nearest, 70)
        if index % 2 == 0:
            lateral = kerb + (facade - kerb) * rng.uniform(0.05, 0.3)
            objects = _pole(rng, camera, lateral, depth)
        else:
            lateral = kerb + (facade - kerb) * rng.uniform(0.3, 0.9)
            objects = [_tree(rng, camera, lateral, depth)]
        units.append((depth, [obj for obj in objects if obj is not None]))
    return units


def _pole(rng: np.random.Generator, camera: Camera, lateral: float, depth: float) -> list[SceneObject | None]:
    scale, top = camera.focal / depth, rng.uniform(3, 8)
    half_width = max(rng.uniform(0.06, 0.12), 0.7 / scale)  # at least ~1.5 px so the pole survives rasterising
    pole = make_object(rng, "pole", place(box(-half_width, 0, half_width, top), camera, lateral, depth), camera,
                       "structure", gradient=0.0)  # fmt: skip
    objects = [pole]
    kind = rng.random()
    if kind < 0.45:
        size, centre = rng.uniform(0.25, 0.4), top - 0.4
        shape = [
            ellipse(0, centre, size, size, 10),
            box(-size, centre - size, size, centre + size),
            np.array([[-size, centre + size], [size, centre + size], [0, centre - size]]),
        ][int(rng.integers(0, 3))]
        sign = make_object(rng, "traffic sign", place(shape, camera, lateral, depth), camera, "sign", gradient=0.05)
        if sign is not None:
            symbol = ellipse(0, centre, 0.45 * size, 0.45 * size, 8)
            sign.parts = [(LIGHT if rng.random() < 0.5 else SECONDARY, place(symbol, camera, lateral, depth))]
        objects.append(sign)
    elif kind < 0.75:
        housing = box(-0.18, top - 1.0, 0.18, top)
        light = make_object(rng, "traffic light", place(housing, camera, lateral, depth), camera, "dark")
        if light is not None:
            lit = int(rng.integers(0, 3))
            for slot in range(3):
                part = (TAIL, LAMP, SECONDARY)[slot] if slot == lit else DARK
                lamp = ellipse(0, top - 0.18 - 0.32 * slot, 0.11, 0.11, 8)
                light.parts.append((part, place(lamp, camera, lateral, depth)))
        objects.append(light)
    return objects


def _tree(rng: np.random.Generator, camera: Camera, lateral: float, depth: float) -> SceneObject | None:
    """Trunk and a ragged crown as one vegetation polygon (Cityscapes labels trunks as vegetation)."""
    radius, trunk = rng.uniform(1.2, 3.0), rng.uniform(1.5, 3.5)
    angles = np.radians(np.linspace(-70, 250, 15))
    ragged = radius * rng.uniform(0.8, 1.15, len(angles))
    crown = np.stack([ragged * np.cos(angles), trunk + radius * 0.8 + ragged * np.sin(angles)], 1)
    stem = np.array([[-0.15, trunk + 0.3], [-0.15, 0], [0.15, 0], [0.15, trunk + 0.3]])
    outline = place(np.vstack([crown, stem]), camera, lateral, depth)
    tree = make_object(rng, "vegetation", outline, camera, "vegetation", texture=FOLIAGE, period=4.0)
    if tree is not None:
        tree.parts = [(SECONDARY, place(box(-0.15, 0, 0.15, trunk), camera, lateral, depth))]
    return tree


def _things(rng: np.random.Generator, street: Street, featured: tuple[str, ...]) -> list[Unit]:
    """Thing instances as many as the style's counts (some side by side; the first ones of the `featured` classes), and
    now and then a crowd."""
    style = street.style
    count = int(rng.choice(len(style.counts), p=style.counts))
    labels, probabilities = list(style.thing_names), [probability for _, probability in style.things]
    units: list[Unit] = []
    protected: list[Unit] = []  # the featured things and the crowd: what must stay visible
    made = 0
    while made < count:
        is_featured = len(protected) < len(featured)
        label = featured[len(protected)] if is_featured else str(rng.choice(labels, p=probabilities))
        lateral, depth, view = _placement(rng, street, label, near=is_featured)
        siblings = int(rng.integers(2, 4)) if label in ("car", "person") and rng.random() < 0.3 else 1
        for sibling in range(siblings):
            objects = _thing(rng, street.camera, label, lateral, depth, view, room=MAX_THINGS - made)
            (protected if is_featured and sibling == 0 else units).append((depth, objects))
            made += max(1, sum(obj.label != "license plate" for obj in objects))
            if made >= count:
                break
            spacing = 1.9 if label == "car" else 0.55
            lateral, depth = lateral + spacing * rng.uniform(0.8, 1.3), depth * rng.uniform(0.97, 1.03)
    if style.crowds and rng.random() < 0.45:
        label = "cargroup" if rng.random() < 0.5 else "persongroup"
        for _ in range(3):  # a crowd hidden behind a featured thing is tried elsewhere
            group = _group(rng, street, label)
            if group[1] and all(_covers(unit, group) < 0.4 for unit in protected):
                protected.append(group)
                break
    # nearer things that would hide most of a protected unit stay away
    return protected + [unit for unit in units if all(_covers(unit, target) < 0.4 for target in protected)]


def _covers(unit: Unit, target: Unit) -> float:
    """Fraction of the target's bounding box inside the bounding box of a nearer unit (0 for a farther one)."""
    if not unit[1] or not target[1] or unit[0] > target[0]:
        return 0.0
    boxes = [np.vstack([np.array(obj.polygon) for obj in objects]) for objects in (unit[1], target[1])]
    (low, high), (target_low, target_high) = ((points.min(0), points.max(0)) for points in boxes)
    overlap = np.clip(np.minimum(high, target_high) - np.maximum(low, target_low), 0, None).prod()
    return float(overlap / max((target_high - target_low).prod(), 1))


def _placement(rng: np.random.Generator, street: Street, label: str, near: bool) -> tuple[float, float, str]:
    """(lateral m, depth m, view) of a new thing, view being "rear", "front", "left" or "right". Vehicles use the
    lanes, people the sidewalks or a crossing; the depth keeps the spot in view (`near`: in the nearer half)."""
    camera, (left, right) = street.camera, street.road
    side = int(rng.integers(0, 2))
    kerb, facade = street.road[side], street.facades[side]
    sideways = "left" if rng.random() < 0.5 else "right"
    if label in ("person", "bicycle") and rng.random() < 0.75:
        lateral, view = kerb + (facade - kerb) * rng.uniform(0.1, 0.9), sideways
    elif label in ("person", "rider", "motorcycle", "bicycle"):
        lateral, view = rng.uniform(left + 0.5, right - 0.5), sideways
    elif rng.random() < (0.3 if label in ("car", "truck", "bus") else 0.6):
        lateral, view = rng.uniform(left + 1, right - 1), sideways
    else:
        lateral = rng.uniform(left + 1.2, right - 1.2)
        view = "front" if lateral < -1.8 else "rear"
    nearest = max(camera.nearest_visible_depth() * rng.uniform(0.8, 1.0), _in_view(camera, lateral))
    # long vehicles seen from the side stay far enough to fit the image width (else they hide the scene)
    if view in ("left", "right"):
        nearest = max(nearest, camera.focal * _SIDE_LENGTHS.get(label, 0.0) / camera.width)
    far = min(55.0 if label in ("car", "truck", "bus", "train") else 38.0, street.style.max_depth)
    return lateral, log_uniform(rng, nearest, max(far / 2 if near else far, 1.5 * nearest)), view


def _in_view(camera: Camera, lateral: float) -> float:
    """The smallest depth (m) at which a point `lateral` metres to the side is inside the image."""
    room = camera.centre if lateral < 0 else camera.width - camera.centre  # pixels from the vanishing point
    return camera.focal * abs(lateral) / (0.95 * room)


def _silhouettes(rng: np.random.Generator, label: str, view: str) -> list[tuple[str, Silhouette]]:
    side, front = view in ("left", "right"), view == "front"
    if label == "car":
        return [("car", car_side(rng) if side else car_rear(rng, front))]
    if label == "truck":
        return [("truck", truck_side(rng) if side else box_vehicle_rear(rng, "truck", front))]
    if label in ("bus", "train"):
        return [(label, long_vehicle_side(rng, label) if side else box_vehicle_rear(rng, label, front))]
    if label == "person":
        return [("person", person(rng))]
    if label == "bicycle":
        return [("bicycle", two_wheeler(rng, motor=False))]
    motor = label == "motorcycle" or rng.random() < 0.25
    vehicle = [("motorcycle" if motor else "bicycle", two_wheeler(rng, motor))]
    return vehicle + ([("rider", rider(rng, motor))] if label == "rider" or rng.random() < 0.7 else [])


def _thing(
    rng: np.random.Generator, camera: Camera, label: str, lateral: float, depth: float, view: str, room: int
) -> list[SceneObject]:
    """The objects of one thing (a two-wheeler with its rider: at most `room` instances; a car with its licence
    plate), each with its parts placed in the image."""
    objects: list[SceneObject] = []
    mirror = view == "left"
    for name, silhouette in _silhouettes(rng, label, view)[: max(room, 1)]:
        palette = "human" if name in ("person", "rider") else "vehicle"
        outline = place(silhouette.outline, camera, lateral, depth, mirror)
        obj = make_object(rng, name, outline, camera, palette, gradient=rng.uniform(-0.1, 0.4))
        if obj is None:
            continue
        obj.parts = [(part, place(polygon, camera, lateral, depth, mirror)) for part, polygon in silhouette.parts]
        obj.shadow = place(ellipse(0, 0, silhouette.half_length * 1.15, 0.12), camera, lateral, depth)
        objects.append(obj)
        plate_width = 0.5 * camera.focal / depth
        if silhouette.plate is not None and plate_width >= 4 and rng.random() < 0.7:
            plate = to_pixels(place(silhouette.plate, camera, lateral, depth), camera.width, camera.height)
            if plate is not None:
                objects.append(SceneObject("license plate", plate, np.zeros(3), np.zeros(3)))
    return objects


def _group(rng: np.random.Generator, street: Street, label: str) -> Unit:
    """A crowd: a few overlapping silhouettes annotated as one `cargroup`/`persongroup` polygon."""
    camera, (left, right) = street.camera, street.road
    members = int(rng.integers(3, 6))
    if label == "cargroup":
        lateral, spacing = rng.uniform(left + 1, right - 3), rng.uniform(1.0, 1.5)
        depth = rng.uniform(max(25, _in_view(camera, lateral)), max(60, 1.5 * _in_view(camera, lateral)))
        shapes = [car_rear(rng, front=lateral < -1.8) for _ in range(members)]
    else:
        side = int(rng.integers(0, 2))
        lateral = street.road[side] + (street.facades[side] - street.road[side]) * rng.uniform(0.2, 0.6)
        nearest = max(camera.nearest_visible_depth() * 1.5, _in_view(camera, lateral))
        depth, spacing = log_uniform(rng, nearest, max(30, 1.5 * nearest)), rng.uniform(0.2, 0.4)
        shapes = [person(rng) for _ in range(members)]
    spots = [(lateral + i * spacing, depth * rng.uniform(0.95, 1.08)) for i in range(members)]
    order = np.argsort([-spot[1] for spot in spots])
    outlines = [place(shapes[i].outline, camera, *spots[i]) for i in order]
    union = union_outline(outlines, camera.width, camera.height)
    palette = "vehicle" if label == "cargroup" else "human"
    group = make_object(rng, label, union, camera, palette) if union is not None else None
    if group is None:
        return depth, []
    for rank, index in enumerate(order):
        group.parts.append((SECONDARY if rank % 2 else BODY, outlines[rank]))
        group.parts += [(part, place(polygon, camera, *spots[index])) for part, polygon in shapes[index].parts]
    return depth, [group]


def _void(rng: np.random.Generator, camera: Camera) -> list[SceneObject | None]:
    """The ego vehicle's bonnet at the bottom; sometimes an `out of roi` frame or `rectification border` corners."""
    width, height, objects = camera.width, camera.height, []
    if rng.random() < 0.7:
        top, bulge = height * (1 - rng.uniform(0.05, 0.13)), height * rng.uniform(0.01, 0.05)
        xs = np.linspace(-0.05 * width, 1.05 * width, 17)
        ys = top + bulge * ((xs - width * rng.uniform(0.4, 0.6)) / (0.6 * width)) ** 2
        bonnet = np.vstack([np.stack([xs, ys], 1), [[1.05 * width, height + 5], [-0.05 * width, height + 5]]])
        objects.append(make_object(rng, "ego vehicle", bonnet, camera, "dark", gradient=rng.uniform(0.2, 0.6)))
    if rng.random() < 0.15:
        border = rng.uniform(1, max(1.5, 0.03 * min(width, height)))
        for strip in (box(0, 0, border, height), box(width - 1 - border, 0, width, height), box(0, 0, width, border),
                      box(0, height - 1 - border, width, height)):  # fmt: skip
            objects.append(make_object(rng, "out of roi", strip, camera, "dark", noise=1.0))
    if rng.random() < 0.1:
        size = rng.uniform(0.05, 0.15) * width
        for corner in (np.array([[0, height - size], [0, height], [size, height]]),
                       np.array([[width, height - size], [width, height], [width - size, height]])):  # fmt: skip
            objects.append(make_object(rng, "rectification border", corner, camera, "dark", noise=0.5, gradient=0.0))
    return objects
