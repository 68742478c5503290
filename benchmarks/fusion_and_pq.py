"""Time panoptic fusion (SPEC §3.6) and the fast PQ evaluator against cityscapesscripts' reference (SPEC §5).

Usage: python benchmarks/fusion_and_pq.py [--images 100] [--workers 2] [--instances 100]
Fusion runs on random logits shaped like real output (1024×2048, stride-4 SOLOv2 mask logits); PQ on synthetic
1024×2048 GT/prediction pairs in the Cityscapes panoptic format, checking both evaluators give the same numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lpsctl.evaluation.pq import evaluate_panoptic
from lpsctl.evaluation.reference import evaluate_panoptic_reference
from lpsctl.labels import id_to_rgb, panoptic_categories
from lpsctl.postprocess.fusion import panoptic_fusion
from lpsctl.structures import Instances

STUFF_LABELS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23)
THING_LABELS = (24, 25, 26, 27, 28, 31, 32, 33)


def fake_outputs(height: int, width: int, count: int, seed: int) -> tuple[torch.Tensor, Instances]:
    """Smooth semantic logits Tensor[19, H, W] and `count` SOLOv2-like instances (blob-shaped stride-4 logits)."""
    generator = torch.Generator().manual_seed(seed)
    logits = F.interpolate(
        torch.randn(1, 19, height // 32, width // 32, generator=generator) * 4, (height, width), mode="bilinear"
    )[0]
    low_height, low_width = height // 4, width // 4
    rows = torch.arange(low_height).float()[None, :, None]
    columns = torch.arange(low_width).float()[None, None, :]
    centre_y = torch.rand(count, 1, 1, generator=generator) * low_height
    centre_x = torch.rand(count, 1, 1, generator=generator) * low_width
    spread_y = torch.rand(count, 1, 1, generator=generator) * 25 + 3
    spread_x = torch.rand(count, 1, 1, generator=generator) * 35 + 3
    distance = (rows - centre_y) ** 2 / (2 * spread_y**2) + (columns - centre_x) ** 2 / (2 * spread_x**2)
    mask_logits = 12 * torch.exp(-distance) - 6 + 0.3 * torch.randn(count, low_height, low_width, generator=generator)
    masks = F.interpolate(mask_logits[None], (height, width), mode="bilinear")[0] > 0
    scores = torch.rand(count, generator=generator) * 0.7 + 0.3
    classes = torch.randint(0, 8, (count,), generator=generator)
    return logits, Instances(masks=masks, scores=scores, classes=classes, mask_logits=mask_logits)


def time_fusion(height: int, width: int, count: int, repeats: int, threads: int) -> None:
    torch.set_num_threads(threads)
    for binary in (False, True):
        logits, instances = fake_outputs(height, width, count, seed=0)
        if binary:
            instances.mask_logits = None
        panoptic_fusion(logits, instances)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = panoptic_fusion(logits, instances)
            times.append(time.perf_counter() - start)
        kind = "binary masks" if binary else "mask logits"
        print(
            f"fusion {height}x{width}, {count} instances ({kind}), CPU, {torch.get_num_threads()} threads: "
            f"min {min(times):.3f} s, median {statistics.median(times):.3f} s over {repeats} runs, "
            f"{len(result.segments_info)} segments"
        )


def _segments(ids: np.ndarray, crowd: set[int]) -> list[dict]:
    """segments_info (area, bbox) of an id map, vectorised over pixels."""
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")
    labels, starts, areas = np.unique(flat[order], return_index=True, return_counts=True)
    rows, columns = np.divmod(order, ids.shape[1])
    segments = []
    for label, start, area in zip(labels.tolist(), starts.tolist(), areas.tolist(), strict=True):
        if label == 0:
            continue
        r, c = rows[start : start + area], columns[start : start + area]
        x, y = int(c.min()), int(r.min())
        category = label // 1000 if label >= 1000 else label
        segments.append(
            {
                "id": label,
                "category_id": category,
                "area": area,
                "bbox": [x, y, int(c.max()) - x + 1, int(r.max()) - y + 1],
                "iscrowd": int(label in crowd),
            }
        )
    return segments


def synthetic_pair(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """GT ids (stuff bands and boxes, ~30 things, crowds, void) and a prediction (shifted, thinned, fragmented)."""
    gt = np.zeros((height, width), dtype=np.int32)
    cuts = np.sort(rng.choice(np.arange(height // 10, height - height // 10), 4, replace=False))
    for label, top, bottom in zip(rng.choice(STUFF_LABELS, 5), (0, *cuts), (*cuts, height), strict=True):
        gt[top:bottom] = label
    for label in rng.choice(STUFF_LABELS, 15):
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        gt[y : y + rng.integers(4, 120), x : x + rng.integers(4, 200)] = label
    counters: dict[int, int] = {}
    for label in rng.choice(THING_LABELS, 30):
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        gt[y : y + rng.integers(10, 300), x : x + rng.integers(10, 300)] = label * 1000 + counters.get(label, 0)
        counters[label] = counters.get(label, 0) + 1
    for label in (24, 26):
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        gt[y : y + rng.integers(20, 150), x : x + rng.integers(20, 300)] = label  # crowd
    gt[height - rng.integers(50, 150) :, : rng.integers(200, 1200)] = 0  # ego vehicle: void
    prediction = np.roll(gt, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1))
    things = [i for i in np.unique(prediction).tolist() if i >= 1000]
    for thing in rng.choice(things, len(things) // 5, replace=False) if things else []:
        prediction[prediction == thing] = 0  # missed
    for thing in rng.choice(things, len(things) // 5, replace=False) if things else []:
        part = prediction == thing
        part[:, : width // 2] = False
        prediction[part] = thing + 500  # fragmented
    for _ in range(5):  # false positives
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        prediction[y : y + rng.integers(10, 100), x : x + rng.integers(10, 100)] = 28000 + 900 + _
    return gt, prediction


def write_sets(folder: Path, images: int, height: int, width: int) -> tuple[Path, Path, Path, Path]:
    rng = np.random.default_rng(0)
    gt_folder, pred_folder = folder / "gt", folder / "pred"
    gt_folder.mkdir(parents=True)
    pred_folder.mkdir(parents=True)
    gt_annotations, pred_annotations = [], []
    for index in range(images):
        image_id = f"synthtown_{index:06d}_000019"
        gt, prediction = synthetic_pair(height, width, rng)
        gt_name, pred_name = f"{image_id}_gtFine_panoptic.png", f"{image_id}_panoptic.png"
        Image.fromarray(id_to_rgb(gt)).save(gt_folder / gt_name, compress_level=1)
        Image.fromarray(id_to_rgb(prediction)).save(pred_folder / pred_name, compress_level=1)
        gt_annotations.append({"image_id": image_id, "file_name": gt_name, "segments_info": _segments(gt, {24, 26})})
        pred_segments = _segments(prediction, set())
        pred_annotations.append({"image_id": image_id, "file_name": pred_name, "segments_info": pred_segments})
    categories = panoptic_categories()
    gt_json, pred_json = folder / "gt.json", folder / "pred.json"
    gt_json.write_text(json.dumps({"annotations": gt_annotations, "categories": categories}))
    pred_json.write_text(json.dumps({"annotations": pred_annotations, "categories": categories}))
    return gt_json, gt_folder, pred_json, pred_folder


def _integer_ids(gt_json: Path, pred_json: Path) -> tuple[Path, Path]:
    """Copies of both JSONs in COCO's shape, which hotcoco requires: integer image ids and an `images` list
    (Cityscapes' panoptic JSONs use the string image id). Made before the timing."""
    index: dict[str, int] = {}
    copies = []
    for path in (gt_json, pred_json):
        content = json.loads(path.read_text())
        for annotation in content["annotations"]:
            annotation["image_id"] = index.setdefault(annotation["image_id"], len(index) + 1)
        content["images"] = [{"id": i, "file_name": f"{name}.png"} for name, i in index.items()]
        copy = path.with_name(f"{path.stem}-coco.json")
        copy.write_text(json.dumps(content))
        copies.append(copy)
    return copies[0], copies[1]


def _hotcoco(gt_json: Path, gt_folder: Path, pred_json: Path, pred_folder: Path) -> dict | None:
    """hotcoco's panopticapi-compatible `pq_compute` (Rust) on the same PNGs (JSONs from `_integer_ids`); None when
    it is not installed (`pip install 'lpsctl[bench]'`). Its printed table is swallowed."""
    try:
        from hotcoco import panoptic
    except ImportError:
        return None
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        return panoptic.pq_compute(str(gt_json), str(pred_json), str(gt_folder), str(pred_folder))


def _largest_difference(ours: dict, other: dict) -> float:
    groups = [abs(ours[g][m] - other[g][m]) for g in ("All", "Things", "Stuff") for m in ("pq", "sq", "rq")]
    classes = [
        abs(ours["per_class"][c][m] - other["per_class"][c][m])
        for c in other["per_class"]
        if c in ours["per_class"]
        for m in ("pq", "sq", "rq")
    ]
    return max(groups + classes)


def time_pq(images: int, height: int, width: int, workers: int, rounds: int) -> None:
    """lpsctl's evaluator, cityscapesscripts' and hotcoco's on the same files, alternating within each round so that
    all see the same load; the best round of each counts, as a ratio to ours."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        paths = write_sets(Path(folder), images, height, width)
        print(f"wrote {images} synthetic {height}x{width} GT/prediction pairs in {time.perf_counter() - start:.1f} s")
        coco_gt, coco_pred = _integer_ids(paths[0], paths[2])
        times: dict[str, list[float]] = {name: [] for name in ("lpsctl", "lpsctl auto", "cityscapesscripts", "hotcoco")}
        results: dict[str, dict | None] = {}
        runners = {
            "lpsctl": lambda: evaluate_panoptic(*paths, workers=workers, backend="lpsctl"),
            "lpsctl auto": lambda: evaluate_panoptic(*paths, workers=workers),
            "cityscapesscripts": lambda: evaluate_panoptic_reference(*paths),
            "hotcoco": lambda: _hotcoco(coco_gt, paths[1], coco_pred, paths[3]),
        }
        for _ in range(rounds):
            for name, runner in runners.items():
                start = time.perf_counter()
                results[name] = runner()
                times[name].append(time.perf_counter() - start)
    ours = results["lpsctl"]
    assert ours is not None
    fast = min(times["lpsctl"])
    labels = {
        "lpsctl": f"lpsctl evaluate_panoptic, its own counting ({workers} processes)",
        "lpsctl auto": "lpsctl evaluate_panoptic as `lpsctl eval` runs it (hotcoco where installed)",
        "cityscapesscripts": f"cityscapesscripts evaluatePanoptic ({os.cpu_count()} processes)",
        "hotcoco": "hotcoco panoptic.pq_compute",
    }
    disagree = False
    for name, label in labels.items():
        if results[name] is None:
            print(f"{label}: not installed (pip install 'lpsctl[bench]')")
            continue
        best = min(times[name])
        line = f"{label}, best of {rounds}: {best:.2f} s ({1000 * best / images:.0f} ms/image), {best / fast:.2f}x ours"
        if name != "lpsctl":
            other = results[name]
            assert other is not None
            difference = _largest_difference(ours, other)
            same_n = all(ours[g]["n"] == other[g]["n"] for g in ("All", "Things", "Stuff"))
            line += f"; largest difference {difference:.2e}, n equal: {same_n}"
            disagree |= difference > 1e-9 or not same_n
        print(line)
    for group in ("All", "Things", "Stuff"):
        print(
            f"  {group:6s} PQ {100 * ours[group]['pq']:.3f} SQ {100 * ours[group]['sq']:.3f} "
            f"RQ {100 * ours[group]['rq']:.3f} n {ours[group]['n']}"
        )
    if disagree:
        raise SystemExit("the evaluators disagree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="synthetic images for the PQ timing")
    parser.add_argument("--workers", type=int, default=2, help="threads for evaluate_panoptic")
    parser.add_argument("--rounds", type=int, default=2, help="timed PQ runs of each evaluator (the best counts)")
    parser.add_argument("--instances", type=int, default=100, help="instances per image for the fusion timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed fusion runs")
    parser.add_argument("--pq-only", action="store_true", help="skip the fusion timing")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    arguments = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    default_threads = torch.get_num_threads()
    for threads in [] if arguments.pq_only else sorted({1, default_threads}):  # 1 thread: stable on a busy machine
        time_fusion(arguments.height, arguments.width, arguments.instances, arguments.repeats, threads)
    torch.set_num_threads(default_threads)
    time_pq(arguments.images, arguments.height, arguments.width, arguments.workers, arguments.rounds)


if __name__ == "__main__":
    main()
