"""The synthetic learning curve: val PQ of `train eps` trained from scratch on a CPU, against training time.

One run of the recipe, validated (fusion + PQ on the val split) every `--eval-period` iterations; the training time of
each point leaves the validations out. By default it measures the demo's recipe (`lpsctl/demo.yaml`) on the demo's
dataset (`lpsctl data synth --style basic`: 300 train / 30 val images of 128×256, made under --root if missing), so
the last row is what `lpsctl demo` reaches; `--config configs/synthetic_eps.yaml --style street --size 256 512
--counts 48 16` measures the light model on the full synthetic street scenes instead.

Run: python benchmarks/learning_curve.py [--eval-period 260] [--root runs/learning_curve/data] [--config PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources
from pathlib import Path

import torch

from lpsctl.config import load_config
from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize
from lpsctl.engine.demo import DEMO_CONFIG, DEMO_STYLE, DemoSizes
from lpsctl.engine.train import train
from lpsctl.engine.validation import validate


def training_minutes(step_times: list[float], eval_period: int) -> dict[int, float]:
    """Minutes of training up to each validated iteration: step intervals, with each validation's extra time
    (its interval minus the median step) left out."""
    intervals = [b - a for a, b in zip(step_times, step_times[1:], strict=False)]
    median = statistics.median(intervals)
    # interval k runs from iteration k + 1 to k + 2; a validation follows iterations that are multiples of the period
    trained = [min(gap, median) if (k + 1) % eval_period == 0 else gap for k, gap in enumerate(intervals)]
    first = median  # the first step's own time is not observed; count it as a typical step
    return {i: (first + sum(trained[: i - 1])) / 60 for i in range(eval_period, len(step_times) + 1, eval_period)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = DemoSizes()
    parser.add_argument("--eval-period", type=int, default=260)
    parser.add_argument("--root", default="runs/learning_curve/data")
    parser.add_argument("--config", default=str(resources.files("lpsctl").joinpath(DEMO_CONFIG)))
    parser.add_argument("--style", default=DEMO_STYLE)
    parser.add_argument("--size", type=int, nargs=2, default=[sizes.height, sizes.width], metavar=("H", "W"))
    parser.add_argument("--counts", type=int, nargs=2, default=[sizes.train_images, sizes.val_images])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", default="runs/learning_curve/run")
    args = parser.parse_args()
    root = Path(args.root)
    counts = dict(zip(("train", "val"), args.counts, strict=True))
    synthesize(root, counts=counts, height=args.size[0], width=args.size[1], seed=0, style=args.style, workers=2)
    prepare(root, workers=2)  # does nothing when up to date
    overrides = [f"data.root={root}", f"solver.eval_period={args.eval_period}", *args.overrides]
    config = load_config(args.config, overrides)
    step_times: list[float] = []
    train(
        config,
        Path(args.out),
        mode="eps",
        overwrite=True,
        on_step=lambda i, n, v: step_times.append(time.perf_counter()),
        validate=validate,
    )
    minutes = training_minutes(step_times, args.eval_period)
    rows = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    print(f"config {args.config} {' '.join(args.overrides)}; {torch.get_num_threads()} threads")
    print("| iteration | images | training (min) | PQ | SQ | RQ | PQ things | PQ stuff | mIoU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in (row for row in rows if "val/pq" in row):
        iteration = row["iteration"]
        scores = " | ".join(f"{row[f'val/{key}']:.1f}" for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou"))
        trained = minutes.get(iteration, (step_times[-1] - step_times[0]) / 60)
        print(f"| {iteration} | {iteration * config.data.batch_size} | {trained:.1f} | {scores} |")


if __name__ == "__main__":
    main()
