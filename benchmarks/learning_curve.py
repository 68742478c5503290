"""The synthetic learning curve: val PQ of `train eps` after M minutes of CPU training from scratch.

For each budget the script times a few iterations, sizes `solver.max_iters` so the schedule ends with the budget,
trains with `solver.max_minutes` as a hard stop, then fuses and evaluates the val split (validation time excluded).
By default it measures the demo's recipe (`lpsctl/demo.yaml`) on the demo's dataset (`lpsctl data synth --style basic`:
300 train / 30 val images of 128×256, made under --root if missing); `--config configs/synthetic_eps.yaml --style
street --size 256 512 --counts 48 16` measures the light model on the full synthetic street scenes instead.

Run: python benchmarks/learning_curve.py [--minutes 2.5 5 7.5] [--root runs/learning_curve/data] [--config PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

from lpsctl.config import load_config
from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize
from lpsctl.engine.demo import DEMO_CONFIG, DEMO_STYLE, DemoSizes
from lpsctl.engine.inference import load_model
from lpsctl.engine.train import train
from lpsctl.engine.validation import validate


def seconds_per_iteration(config_path: str, overrides: list[str], probe_iterations: int = 8) -> float:
    """Median step time of a short probe run (the first steps, with data-loader start-up, are left out)."""
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(config_path, [*overrides, f"solver.max_iters={probe_iterations}", "solver.warmup_iters=0"])
        times: list[float] = []
        train(config, Path(folder), mode="eps", on_step=lambda i, n, v: times.append(time.perf_counter()))
    return statistics.median(b - a for a, b in zip(times[2:], times[3:], strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = DemoSizes()
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.5, 5.0, 7.5])
    parser.add_argument("--root", default="runs/learning_curve/data")
    parser.add_argument("--config", default=str(resources.files("lpsctl").joinpath(DEMO_CONFIG)))
    parser.add_argument("--style", default=DEMO_STYLE)
    parser.add_argument("--size", type=int, nargs=2, default=[sizes.height, sizes.width], metavar=("H", "W"))
    parser.add_argument("--counts", type=int, nargs=2, default=[sizes.train_images, sizes.val_images])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", default="runs/learning_curve")
    args = parser.parse_args()
    root = Path(args.root)
    counts = dict(zip(("train", "val"), args.counts, strict=True))
    synthesize(root, counts=counts, height=args.size[0], width=args.size[1], seed=0, style=args.style, workers=2)
    prepare(root, workers=2)  # does nothing when up to date
    overrides = [f"data.root={root}", "solver.eval_period=0", *args.overrides]
    pace = seconds_per_iteration(args.config, overrides)
    print(
        f"{pace:.2f} s/iteration ({torch.get_num_threads()} threads); config {args.config} {' '.join(args.overrides)}"
    )
    print("| budget (min) | trained (min) | iterations | PQ | SQ | RQ | PQ things | PQ stuff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for minutes in args.minutes:
        iterations = max(1, int(minutes * 60 / pace))
        config = load_config(
            args.config, [*overrides, f"solver.max_iters={iterations}", f"solver.max_minutes={minutes}"]
        )
        start = time.perf_counter()
        summary = train(config, Path(args.out) / f"{minutes:g}min", mode="eps", overwrite=True)
        trained = (time.perf_counter() - start) / 60
        model, model_config = load_model(summary.last_checkpoint, torch.device("cpu"))
        metrics = validate(model, model_config, torch.device("cpu"), "eps")
        scores = " | ".join(f"{metrics[key]:.1f}" for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"))
        print(f"| {minutes:g} | {trained:.1f} | {summary.iterations} | {scores} |")


if __name__ == "__main__":
    main()
