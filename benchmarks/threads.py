"""Training throughput under CPU contention: iterations the demo recipe completes in a fixed time, per thread setting,
on an idle machine and next to a parallel load (busy processes), in one run.

    python benchmarks/threads.py                    # ~8 minutes: 4 settings × (idle, loaded), 45 s each
    python benchmarks/threads.py --seconds 20 --settings default,passive

Each run is `lpsctl train eps` with the demo recipe (`lpsctl/demo.yaml`, EfficientNet-B0 at 128×256, batch 4, one
loader worker) and `solver.max_minutes` set to the time budget, in its own process; the figure is the iteration it
reached (its last.pt). Settings:
  default   lpsctl's own choice (see `lpsctl.engine.threads`)
  torch     torch's defaults: as many OpenMP threads as cores, spinning while they wait (OMP_WAIT_POLICY unset,
            LPSCTL_THREADS=torch turns lpsctl's choice off)
  passive   torch's thread count with OMP_WAIT_POLICY=PASSIVE (threads sleep instead of spinning)
  one       a single intra-op thread (OMP_NUM_THREADS=1)
  spin10k   torch's thread count, each thread spinning 10,000 times before it sleeps (GOMP_SPINCOUNT=10000)
The load is `--load` processes that spin on the CPU for the whole run (another job on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

SETTINGS = {
    "default": {},
    "torch": {"LPSCTL_THREADS": "torch"},
    "passive": {"LPSCTL_THREADS": "torch", "OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"LPSCTL_THREADS": "torch", "OMP_NUM_THREADS": "1"},
    "spin10k": {"LPSCTL_THREADS": "torch", "GOMP_SPINCOUNT": "10000"},
}


def spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def train_for(root: Path, out: Path, seconds: float, env: dict[str, str]) -> int:
    demo = resources.files("lpsctl") / "demo.yaml"
    command = [sys.executable, "-m", "lpsctl", "train", "eps", "--config", str(demo), "--out", str(out), "--overwrite"]
    for override in (f"data.root={root}", f"solver.max_minutes={seconds / 60}", "solver.max_iters=100000",
                     "solver.checkpoint_period=100000"):  # fmt: skip
        command += ["--set", override]
    environment = {
        k: v for k, v in os.environ.items() if k not in {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}
    } | env
    result = subprocess.run([*command, "--no-validate"], env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return max(int(line["iteration"]) for line in lines if "iteration" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="training time budget of every run")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy processes of the loaded runs")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lpsctl-threads")
    args = parser.parse_args()
    root = args.out / "data"
    if not (root / "annotations").is_dir():
        for step in (["data", "synth", "--root", str(root), "--style", "basic", "--train", "100", "--val", "4",
                      "--height", "128", "--width", "256"], ["data", "prepare", "--root", str(root)]):  # fmt: skip
            subprocess.run([sys.executable, "-m", "lpsctl", *step], check=True, capture_output=True)
    print(f"{os.cpu_count()} cores; {args.seconds:.0f} s of training per run; load: {args.load} spinning processes")
    for name in args.settings.split(","):
        figures = []
        for loaded in (False, True):
            spinners = []
            if loaded:
                stop_at = time.monotonic() + args.seconds + 120
                spinners = [multiprocessing.Process(target=spin, args=(stop_at,)) for _ in range(args.load)]
                for process in spinners:
                    process.start()
            try:
                figures.append(train_for(root, args.out / f"run-{name}", args.seconds, SETTINGS[name]))
            finally:
                for process in spinners:
                    process.terminate()
                    process.join()
        idle, busy = figures
        print(f"{name:8s} idle {idle:4d} iterations, loaded {busy:4d} ({busy / max(idle, 1):.0%} of idle)", flush=True)


if __name__ == "__main__":
    main()
