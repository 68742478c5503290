"""The data loader's share of a training iteration: `lpsctl train eps` with the demo recipe for a fixed time per
`data.num_workers` setting, from the `data_s` (wait for the next batch) and `images_per_s` of every step.

    python benchmarks/loader_share.py [--seconds 36] [--workers 0,1,2]      # ~2.5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=36.0)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    demo = resources.files("lpsctl") / "demo.yaml"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        for step in (["data", "synth", "--root", str(root), "--style", "basic", "--train", "100", "--val", "4",
                      "--height", "128", "--width", "256"], ["data", "prepare", "--root", str(root)]):  # fmt: skip
            subprocess.run([sys.executable, "-m", "lpsctl", *step], check=True, capture_output=True)
        print(f"demo recipe, {args.seconds:.0f} s of training per setting (the first 5 steps left out):")
        for workers in args.workers.split(","):
            out = Path(folder) / f"run-{workers}"
            command = [sys.executable, "-m", "lpsctl", "train", "eps", "--config", str(demo), "--out", str(out),
                       "--no-validate"]  # fmt: skip
            for override in (f"data.root={root}", f"data.num_workers={workers}", "solver.log_period=1",
                             f"solver.max_minutes={args.seconds / 60}", "solver.checkpoint_period=100000"):  # fmt: skip
                command += ["--set", override]
            subprocess.run(command, check=True, capture_output=True)
            lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            steps = [line for line in lines if "data_s" in line][5:]
            batch = 4  # the demo recipe's data.batch_size
            iteration = sum(batch / line["images_per_s"] for line in steps) / len(steps)
            wait = sum(line["data_s"] for line in steps) / len(steps)
            print(f"  num_workers {workers}: {len(steps)} steps, waited {1000 * wait:.1f} ms of a "
                  f"{1000 * iteration:.0f} ms iteration ({100 * wait / iteration:.1f} %)")  # fmt: skip


if __name__ == "__main__":
    main()
