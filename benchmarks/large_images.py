"""Peak memory and time of `lpsctl visualize` on one large photo, with `data.eval_max_size` at its default (2048: the
image is shrunk for the network and its result upsampled) and off (0: the network runs at the photo's size).

    python benchmarks/large_images.py [--height 4000 --width 6000]      # ~3 minutes on 2 CPU cores

The model is the synthetic recipe's (`configs/synthetic_eps.yaml`, EfficientNet-B0) after one training iteration on
a tiny synthetic set: what is measured is the inference path, not the weights. Each run is its own process; peak
memory is its max RSS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).parents[1]


#: runs one lpsctl command as its only child and prints that child's peak RSS (kB), so each figure is its own
WRAPPER = (
    "import resource, subprocess, sys; "
    "subprocess.run([sys.executable, '-m', 'lpsctl', *sys.argv[1:]], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def lpsctl(*arguments: str) -> int:
    """Run `lpsctl ARGUMENTS`; its peak RSS in kB."""
    result = subprocess.run([sys.executable, "-c", WRAPPER, *arguments], check=True, capture_output=True, text=True)
    return int(result.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--width", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        lpsctl("data", "synth", "--root", str(work / "data"), "--train", "4", "--val", "2", "--height", "64",
               "--width", "128")  # fmt: skip
        lpsctl("data", "prepare", "--root", str(work / "data"))
        lpsctl("train", "eps", "--config", str(REPO / "configs" / "synthetic_eps.yaml"), "--out", str(work / "run"),
               "--set", f"data.root={work / 'data'}", "--set", "solver.max_iters=1", "--set", "data.num_workers=0",
               "--no-validate")  # fmt: skip
        photo = work / "photo.png"
        pixels = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photo, compress_level=1)
        print(f"lpsctl visualize on one {args.width}×{args.height} photo (B0 synthetic-recipe model, CPU):")
        for label, setting in (("eval_max_size 2048 (default)", "2048"), ("eval_max_size 0 (never shrink)", "0")):
            start = time.perf_counter()
            peak = lpsctl("visualize", str(photo), "--checkpoint", str(work / "run" / "last.pt"), "--out",
                          str(work / f"vis-{setting}"), "--set", f"data.eval_max_size={setting}")  # fmt: skip
            seconds = time.perf_counter() - start
            print(f"  {label}: {seconds:.1f} s, peak RSS {peak / 2**20:.1f} GB", flush=True)


if __name__ == "__main__":
    main()
