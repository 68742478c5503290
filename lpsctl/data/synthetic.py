"""Synthetic street scenes in Cityscapes format (SPEC §2): images rendered from annotation polygons, label PNGs made
by cityscapesscripts from the same polygons, deterministic per (seed, split, index), written atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation.json2instanceImg import json2instanceImg
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image, ImageDraw, ImageFilter

from lpsctl.atomic import atomic_path
from lpsctl.data import synthetic_scene as scene
from lpsctl.data import synthetic_shapes as shapes
from lpsctl.data.cityscapes import SPLITS, Paths
from lpsctl.errors import ConfigError, DataError
from lpsctl.labels import THING_NAMES, base_label_name
from lpsctl.parallel import parallel_map

if TYPE_CHECKING:  # structures imports torch; worker processes do not need it
    from lpsctl.structures import ProgressCallback

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "synthetic.json"
#: folders under the root that a synthetic dataset owns (images, labels, and what `data prepare` derives from them)
OWNED_FOLDERS = ("leftImg8bit", "gtFine", "annotations")
#: cities per split: disjoint, so no two splits share an image id
CITIES = {"train": ("synthcity", "synthville"), "val": ("synthtown",), "test": ("synthburg",)}
FRAME = 19  # the annotated frame of every Cityscapes sequence snippet
MIN_SIZE = 64
LABEL_SUFFIXES = ("polygons.json", "labelIds.png", "instanceIds.png", "color.png")


@dataclass(frozen=True)
class SynthReport:
    """What `synthesize` did: `written` images were generated now, the rest were already complete on disk."""

    root: Path
    counts: dict[str, int]
    height: int
    width: int
    seed: int
    written: int
    style: str = "street"

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        splits = ", ".join(f"{split} {count}" for split, count in self.counts.items())
        text = f"{self.total} {self.style} images ({splits}, {self.height}×{self.width}) in {self.root}"
        if self.written < self.total:
            text += f" (reused {self.total - self.written} complete images)"
        return text


def image_paths(root: Path, split: str, index: int) -> Paths:
    """Where image `index` of `split` lives: cities take turns, `{city}_{seq:06d}_{FRAME:06d}`."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return Paths(Path(root), split, city, f"{city}_{index // len(cities):06d}_{FRAME:06d}")


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: depends on (seed, split, index) only, so the output ignores `workers`."""
    digest = hashlib.sha256(f"lpsctl-synthetic/{seed}/{split}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def generate(
    seed: int, split: str, index: int, height: int, width: int, style: str = "street"
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Scene and rendering of one image: (polygons JSON dict, image uint8[H, W, 3], label ids uint8[H, W]); the label
    ids are the renderer's own region map, which json2labelImg reproduces from the JSON."""
    rng = image_rng(seed, split, index)
    rules = scene.STYLES[style]
    # two featured classes per image, cycling: any 4 consecutive images hold all 8 thing classes of `street`
    names = [name for name in THING_NAMES if name in rules.thing_names]
    featured = (names[index % len(names)], names[(index + len(names) // 2) % len(names)])
    objects = scene.make_scene(rng, height, width, featured, rules)
    image, label_ids = render(objects, height, width, rng)
    annotation = {
        "imgHeight": height,
        "imgWidth": width,
        "objects": [
            {"label": obj.label, "polygon": obj.polygon} | ({"deleted": 1} if obj.deleted else {}) for obj in objects
        ],
    }
    return annotation, image, label_ids


def label_id(label: str) -> int:
    """Cityscapes label id of a polygon label (`cargroup` → car's id), as cityscapesscripts reads it."""
    return name2label[base_label_name(label)].id


def render(
    objects: list[shapes.SceneObject], height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the objects in order: uint8[H, W, 3] image and uint8[H, W] label ids of the pixels each object won.

    Objects are rasterised with the same PIL polygon fill that cityscapesscripts uses, so the label ids match
    json2labelImg's output; deleted objects and labels with a negative id (licence plates) are skipped, as there."""
    drawn = [obj for obj in objects if not obj.deleted and label_id(obj.label) >= 0]
    region = Image.new("I", (width, height))  # index of the object owning each pixel (0: none)
    coded = Image.new("I", (width, height))
    shadow = Image.new("L", (width, height), 255)
    draw_region, draw_coded, draw_shadow = ImageDraw.Draw(region), ImageDraw.Draw(coded), ImageDraw.Draw(shadow)
    for index, obj in enumerate(drawn, start=1):
        polygon = [tuple(point) for point in obj.polygon]
        if obj.shadow is not None:
            draw_shadow.polygon(_points(obj.shadow), fill=int(rng.uniform(100, 170)))
        draw_region.polygon(polygon, fill=index)
        # parts are coded as 8·owner + part: a part pixel that spills onto another object is ignored below
        draw_coded.polygon(polygon, fill=8 * index)
        draw_shadow.polygon(polygon, fill=255)
        for part, points in obj.parts:
            draw_coded.polygon(_points(points), fill=8 * index + part)
    owner = np.asarray(region, dtype=np.int64)
    codes = np.asarray(coded, dtype=np.int64)
    parts = np.where(codes // 8 == owner, codes % 8, shapes.BODY)
    image = _paint(drawn, owner, parts, rng) * (np.asarray(shadow, dtype=np.float32) / 255.0)[..., None]
    image = _photometric(image, rng)
    lookup = np.array([0] + [label_id(obj.label) for obj in drawn], dtype=np.uint8)
    return image, lookup[owner]


def _points(points: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(point) for point in np.asarray(points, dtype=float).tolist()]


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """float32[H, W] smooth noise (about unit variance): a coarse random grid, bilinearly upsampled."""
    coarse = rng.standard_normal((max(2, cells[0]), max(2, cells[1]))).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


def _grain(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 standard-normal-like noise from random bytes through a quantile table (several times cheaper)."""
    quantiles = np.sort(rng.standard_normal(256)).astype(np.float32)
    return quantiles[np.frombuffer(rng.bytes(int(np.prod(shape))), dtype=np.uint8).reshape(shape)]


def _paint(
    drawn: list[shapes.SceneObject], owner: np.ndarray, part: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """float32[H, W, 3]: per-object colours, parts, textures and shading, gathered through the region map."""
    height, width = owner.shape
    table = np.full((len(drawn) + 1, 8, 3), 110.0, dtype=np.float32)  # row 0: unlabelled pixels (rare)
    settings = np.zeros((len(drawn) + 1, 7), dtype=np.float32)  # texture, period, noise, gradient, top, span, phase
    settings[0] = (shapes.PLAIN, 8, 3, 0, 0, height, 0)
    jitter = rng.uniform(0.85, 1.1, len(drawn) + 1)
    for index, obj in enumerate(drawn, start=1):
        table[index] = (obj.colour, obj.colour * 0.25 + (25, 30, 38), (22, 22, 25), (240, 232, 200), obj.skin,
                        obj.colour2, (228, 228, 222), (190, 28, 28))  # fmt: skip
        table[index, 2:] *= jitter[index]
        top, bottom = min(y for _, y in obj.polygon), max(y for _, y in obj.polygon)
        settings[index] = (
            obj.texture,
            obj.period,
            obj.noise,
            obj.gradient,
            top,
            max(bottom - top, 1),
            rng.uniform(0, 64),
        )
    texture = settings[:, 0].astype(np.int8)[owner]
    image = table[owner, part]
    body = part == shapes.BODY
    for kind in (shapes.WINDOWS, shapes.STRIPES, shapes.TILES):  # patterns, computed on their own pixels only
        rows, columns = np.nonzero(body & (texture == kind))
        objects = owner[rows, columns]
        period, top, span, phase = (settings[objects, i] for i in (1, 4, 5, 6))
        x, y = (columns + phase) % period, (rows + phase) % (1.4 * period)
        if kind == shapes.WINDOWS:
            hit = (x < 0.5 * period) & (y < 0.7 * period) & (rows > top + 0.1 * span)
        elif kind == shapes.STRIPES:
            hit = x < 0.35 * period
        else:
            image[rows[(x < 1) | (y < 1)], columns[(x < 1) | (y < 1)]] *= 0.8
            continue
        image[rows[hit], columns[hit]] = table[objects[hit], shapes.SECONDARY]
    relative = (np.arange(height, dtype=np.float32)[:, None] - settings[:, 4][owner]) / settings[:, 5][owner]
    factor = 1 + settings[:, 3][owner] * (0.5 - relative)
    factor += np.where(texture == shapes.FOLIAGE, 0.3 * _smooth_noise(rng, height, width, (height // 6, width // 6)), 0)
    factor += np.where(texture == shapes.SKY, 0.12 * _smooth_noise(rng, height, width, (4, 8)), 0)
    grain = settings[:, 2][owner] * np.where(texture == shapes.ASPHALT, np.float32(2), np.float32(1))
    return image * factor[..., None] + (grain * _grain(rng, (height, width)))[..., None]


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global lighting, brightness/contrast/colour/gamma jitter, a slight blur and sensor noise: uint8[H, W, 3]."""
    height, width = image.shape[:2]
    image *= (1 + rng.uniform(0.05, 0.2) * _smooth_noise(rng, height, width, (3, 5)))[..., None]
    contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(0.7, 1.25)
    colour = brightness * rng.uniform(0.88, 1.12, 3)
    gain = (contrast * colour).astype(np.float32)
    offset = (float(image.mean()) * (1 - contrast) * colour).astype(np.float32)  # contrast pivots on the mean
    levels = np.clip(image * gain + offset, 0, 255).astype(np.uint8)
    gamma = 255.0 * (np.arange(256) / 255.0) ** rng.uniform(0.8, 1.25)  # a lookup table: cheaper than a power
    blurred = Image.fromarray(gamma.astype(np.uint8)[levels]).filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.7)))
    noisy = np.asarray(blurred, dtype=np.float32) + rng.uniform(1, 4) * _grain(rng, image.shape)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


# --- writing --------------------------------------------------------------------------------------------------------


def synthesize(
    root: Path,
    *,
    counts: dict[str, int],
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    style: str = "street",
    workers: int = 1,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> SynthReport:
    """Write (or complete) a synthetic dataset under `root`: counts maps split → number of images; `style` names
    what the scenes hold (`synthetic_scene.STYLES`).

    Images already complete on disk for the same parameters are kept (the output is deterministic); a root holding
    anything else is refused; `overwrite` replaces a previous synthetic dataset (only the folders it owns)."""
    root = Path(root)
    counts = _validate(counts, height, width, workers, style)
    parameters = {"format": "lpsctl-synthetic", "version": FORMAT_VERSION, "counts": counts, "height": height,
                  "width": width, "seed": seed, "style": style}  # fmt: skip
    _claim_root(root, parameters, overwrite)
    written = 0
    for split, count in counts.items():
        missing = [index for index in range(count) if not _complete(image_paths(root, split, index))]
        done = count - len(missing)
        if progress is not None:
            progress(f"synth {split}", done, count)
        tasks = [(root, split, index, height, width, seed, style) for index in missing]
        for _ in parallel_map(_write_image, tasks, workers, processes=True):
            done, written = done + 1, written + 1
            if progress is not None:
                progress(f"synth {split}", done, count)
    logger.info("synthetic dataset: %d images written, %d reused in %s", written, sum(counts.values()) - written, root)
    return SynthReport(root, counts, height, width, seed, written, style)


def _validate(counts: dict[str, int], height: int, width: int, workers: int, style: str) -> dict[str, int]:
    """The counts without empty splits, in the canonical split order; ConfigError for anything unusable."""
    if style not in scene.STYLES:
        raise ConfigError(f"unknown synthetic style {style!r}; choose one of: {', '.join(scene.STYLES)}")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < MIN_SIZE:
            raise ConfigError(f"synthetic image {name} must be an integer ≥ {MIN_SIZE} pixels (got {value!r})")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer ≥ 1 (got {workers!r})")
    unknown = sorted(set(counts) - set(CITIES))
    if unknown:
        raise ConfigError(f"unknown split(s) {', '.join(unknown)} for the synthetic dataset: use {', '.join(SPLITS)}")
    for split, count in counts.items():
        if not isinstance(count, int) or count < 0:
            raise ConfigError(f"image count for split '{split}' must be an integer ≥ 0 (got {count!r})")
    if sum(counts.values()) == 0:
        raise ConfigError("nothing to write: every image count is 0 (ask for at least one image, e.g. --train 8)")
    return {split: counts[split] for split in SPLITS if counts.get(split, 0) > 0}


def _describe(parameters: dict[str, Any]) -> str:
    counts = ", ".join(f"{split} {count}" for split, count in dict(parameters.get("counts", {})).items())
    size = f"{parameters.get('height')}×{parameters.get('width')}"
    return f"{counts}, {size}, seed {parameters.get('seed')}, style {parameters.get('style', 'street')}"


def _claim_root(root: Path, parameters: dict[str, Any], overwrite: bool) -> None:
    """Make `root` ours for these parameters: reuse, refuse, or (overwrite) clear a previous synthetic dataset."""
    if root.exists() and not root.is_dir():
        raise DataError(f"dataset root {root} is a file, not a folder: choose another --root")
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict):
            previous.setdefault("style", "street")  # manifests from before styles existed
        if previous == parameters and not overwrite:
            return
        if not overwrite:
            made = _describe(previous) if isinstance(previous, dict) else f"an unreadable {MANIFEST}"
            raise DataError(
                f"{root} already holds a synthetic dataset ({made}), not the one asked for ({_describe(parameters)}): "
                "pass --overwrite to replace it, or write the new dataset to another folder"
            )
        for folder in OWNED_FOLDERS:
            if (root / folder).exists():
                shutil.rmtree(root / folder)
        logger.info("removed the previous synthetic dataset in %s", root)
    elif root.is_dir() and any(root.iterdir()):
        raise DataError(
            f"{root} is not empty and is not a synthetic dataset (no {MANIFEST}); refusing to write into it"
            f"{' even with --overwrite' if overwrite else ''}: choose an empty or new --root"
        )
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write(manifest, lambda path: path.write_text(json.dumps(parameters, indent=2) + "\n"))


def _complete(paths: Paths) -> bool:
    return paths.image.is_file() and all(paths.gt(suffix).is_file() for suffix in LABEL_SUFFIXES)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temporary)` next to `path` (same suffix, so writers infer the format), then rename it into place."""
    with atomic_path(path) as temporary:
        write(temporary)


def _write_image(task: tuple[Path, str, int, int, int, int, str]) -> None:
    """Generate one image and write its five files; the label PNGs come from cityscapesscripts reading the JSON."""
    root, split, index, height, width, seed, style = task
    paths = image_paths(root, split, index)
    annotation, image, _ = generate(seed, split, index, height, width, style)
    paths.image.parent.mkdir(parents=True, exist_ok=True)
    paths.gt("polygons.json").parent.mkdir(parents=True, exist_ok=True)
    polygons = paths.gt("polygons.json")
    _atomic_write(polygons, lambda path: path.write_text(json.dumps(annotation)))
    _atomic_write(paths.gt("labelIds.png"), partial(json2labelImg, str(polygons), encoding="ids"))
    _atomic_write(paths.gt("instanceIds.png"), partial(json2instanceImg, str(polygons), encoding="ids"))
    _atomic_write(paths.gt("color.png"), partial(json2labelImg, str(polygons), encoding="color"))
    # compress level 1: several times faster, and sensor noise hardly compresses anyway
    _atomic_write(paths.image, partial(Image.fromarray(image).save, compress_level=1))
