"""Images/s of `lpsctl data prepare` against the cityscapesscripts conversions run alone (SPEC §2).

Generates N synthetic Cityscapes-size images (default 8 at 1024×2048), then times
(a) cityscapesscripts as its scripts run it: json2labelImg(trainIds) per file + convert2panoptic, one process;
(b) `prepare(workers=2, overwrite=True)`: the same files plus validation and the COCO instance JSON;
(c) the same with 1 worker, which shows what validation and the COCO JSON cost on their own.
Usage: python benchmarks/prepare_throughput.py [--images 8] [--workers 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from cityscapesscripts.preparation.json2labelImg import json2labelImg

from lpsctl.data.cityscapes import list_images
from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def scripts_alone(root: Path, scratch: Path) -> float:
    """Seconds for what createTrainIdLabelImgs + createPanopticImgs do, on the val split of `root`."""
    start = time.perf_counter()
    for paths in list_images(root, "val"):
        json2labelImg(str(paths.gt("polygons.json")), str(scratch / f"{paths.image_id}_labelTrainIds.png"), "trainIds")
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(cityscapesPath=str(root / "gtFine"), outputFolder=str(scratch), setNames=["val"])
    return time.perf_counter() - start


def lpsctl_prepare(root: Path, workers: int) -> float:
    start = time.perf_counter()
    prepare(root, splits=["val"], workers=workers, overwrite=True, progress=None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "cityscapes"
        start = time.perf_counter()
        counts = {"val": args.images}
        synthesize(
            root,
            counts=counts,
            height=args.height,
            width=args.width,
            seed=0,
            workers=args.workers,
            overwrite=False,
            progress=None,
        )
        generated = time.perf_counter() - start
        baseline, ours, serial = [], [], []
        for run in range(args.repeat):
            scratch = Path(folder) / f"scripts{run}"
            scratch.mkdir()
            baseline.append(scripts_alone(root, scratch))
            ours.append(lpsctl_prepare(root, args.workers))
            serial.append(lpsctl_prepare(root, 1))
    rows = [
        ("cityscapesscripts alone (json2labelImg trainIds + convert2panoptic), 1 process", min(baseline)),
        (f"lpsctl data prepare, {args.workers} workers (+ validation, COCO JSON)", min(ours)),
        ("lpsctl data prepare, 1 worker (+ validation, COCO JSON)", min(serial)),
    ]
    size = f"{args.height}×{args.width}"
    print(f"prepare throughput: {args.images} synthetic images of {size} (generated in {generated:.1f} s)")
    load = os.getloadavg()[0]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores (load average {load:.1f} at the end); best of {args.repeat}")
    print(f"| {'method':<82} | {'seconds':>7} | {'images/s':>8} |")
    print(f"|{'-' * 84}|{'-' * 8}:|{'-' * 9}:|")
    for name, seconds in rows:
        print(f"| {name:<82} | {seconds:7.2f} | {args.images / seconds:8.2f} |")


if __name__ == "__main__":
    main()
