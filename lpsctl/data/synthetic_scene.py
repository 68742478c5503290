"""Perspective street layout of the synthetic Cityscapes-format dataset (SPEC §2): what a street holds (the styles),
where things stand, in drawing order; shapes come from `synthetic_shapes`, objects lower in the image are bigger."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpsctl.data.synthetic_shapes import (
    ASPHALT,
    BODY,
    DARK,
    FOLIAGE,
    LAMP,
    LIGHT,
    PLAIN,
    SECONDARY,
    SKY,
    STRIPES,
    TAIL,
    TILES,
    WINDOWS,
    Camera,
    HSVBox,
    SceneObject,
    Silhouette,
    box,
    box_vehicle_rear,
    car_rear,
    car_side,
    ellipse,
    long_vehicle_side,
    make_object,
    person,
    rider,
    sample_colour,
    to_pixels,
    truck_side,
    two_wheeler,
    union_outline,
)

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
