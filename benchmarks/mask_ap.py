"""Mask AP evaluators side by side on the same files: pycocotools' COCOeval (what `lpsctl eval --masks` runs),
faster-coco-eval's COCOeval_faster and hotcoco's COCOeval, timed and compared number by number.

    python benchmarks/mask_ap.py [--images 40] [--height 1024 --width 2048]     # pip install 'lpsctl[bench]'

Data: `lpsctl data synth --style street` (many small things, crowds) prepared into the COCO instance JSON; results:
`--copies` candidates per GT instance (its mask shifted by a few pixels, a random score; a third of the instances
dropped) and false positives (masks of other images), so that precision/recall curves are non-trivial. Each
evaluator loads the GT and the results itself, then evaluate + accumulate + summarize; the figure is the best of
`--rounds` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from lpsctl.data.cityscapes import coco_json
from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize


def make_results(gt_json: Path, copies: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    gt = json.loads(gt_json.read_text())
    annotations = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    results = []
    for annotation in annotations:
        if rng.random() < 1 / 3:
            continue
        image = next(i for i in gt["images"] if i["id"] == annotation["image_id"])
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, image["height"], image["width"]))
        else:
            rle = segmentation if isinstance(segmentation["counts"], str) else mask_utils.frPyObjects(
                segmentation, image["height"], image["width"])  # fmt: skip
        decoded = mask_utils.decode(rle)
        for _ in range(copies):  # a low-threshold detector: several shifted candidates per object
            mask = np.roll(decoded, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1))
            encoded = mask_utils.encode(np.asfortranarray(mask))
            for image_id in (annotation["image_id"], int(rng.choice([i["id"] for i in gt["images"]]))):
                results.append({"image_id": image_id, "category_id": annotation["category_id"],
                                "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode()},
                                "score": float(rng.random())})  # fmt: skip
                if rng.random() < 0.7:
                    break  # most without a false positive elsewhere
    return results


def run(backend: str, gt_json: Path, results_json: Path) -> np.ndarray:
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    elif backend == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    else:
        from hotcoco import COCO
        from hotcoco import COCOeval as Eval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        evaluator = Eval(gt, gt.loadRes(str(results_json)), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--copies", type=int, default=8, help="shifted candidates per GT instance")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "cityscapes"
        synthesize(root, counts={"val": args.images}, height=args.height, width=args.width, seed=0, style="street",
                   workers=os.cpu_count() or 1)  # fmt: skip
        prepare(root, workers=os.cpu_count() or 1)
        gt_json = coco_json(root, "val")
        results = make_results(gt_json, args.copies)
        results_json = Path(folder) / "results.json"
        results_json.write_text(json.dumps(results))
        instances = len(json.loads(gt_json.read_text())["annotations"])
        print(f"{args.images} images {args.height}x{args.width}: {instances} GT instances, {len(results)} results")
        times: dict[str, list[float]] = {}
        stats: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for backend in ("pycocotools", "faster-coco-eval", "hotcoco"):
                try:
                    start = time.perf_counter()
                    stats[backend] = run(backend, gt_json, results_json)
                    times.setdefault(backend, []).append(time.perf_counter() - start)
                except ImportError:
                    pass
    reference = stats["pycocotools"]
    base = min(times["pycocotools"])
    for backend, seconds in times.items():
        difference = float(np.abs(stats[backend] - reference).max())
        print(
            f"{backend:17s} best of {args.rounds}: {min(seconds):.2f} s ({base / min(seconds):.1f}x pycocotools); "
            f"largest difference of the 12 COCO numbers: {difference:.1e}; AP {100 * stats[backend][0]:.3f}"
        )


if __name__ == "__main__":
    main()
