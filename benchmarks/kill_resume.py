"""Kill -9 during `lpsctl train` at random moments, then `--resume`, again and again: how many iterations each kill
lost (at most solver.checkpoint_period), and whether any file was left half-written.

Each round starts `lpsctl train solo` (or `--resume`), waits a random time, SIGKILLs the process, then checks the run
folder: last.pt loads, metrics.jsonl has no torn line that the resumed run keeps, no temporary file is left once the
resumed run has written its next checkpoint. Prints one line per kill and a summary.

    python benchmarks/kill_resume.py                    # 10 kills, ~4 minutes on a 2-core CPU
    python benchmarks/kill_resume.py --kills 3 --out /tmp/kill
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize
from lpsctl.engine.checkpoint import load_checkpoint

REPO = Path(__file__).parents[1]
CHECKPOINT_PERIOD = 10
OVERRIDES = (
    "data.crop_height=64",
    "data.crop_width=128",
    "data.batch_size=2",
    "data.num_workers=1",
    "model.norm=torch",
    "solo.stacked_convs=1",
    "solo.head_channels=32",
    "solo.kernel_dim=32",
    "solo.mask_feature_channels=32",
    "solver.max_iters=100000",
    f"solver.checkpoint_period={CHECKPOINT_PERIOD}",
    "solver.eval_period=0",
    "solver.log_period=1",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lpsctl-kill-resume")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root, run = args.out / "data", args.out / "run"
    synthesize(root, counts={"train": 16, "val": 2}, height=64, width=128, seed=0, workers=2)
    prepare(root, workers=2)
    command = [sys.executable, "-m", "lpsctl", "train", "solo", "--out", str(run), "--no-validate",
               "--config", str(REPO / "configs" / "synthetic_solo.yaml"), "--set", f"data.root={root}"]  # fmt: skip
    for item in OVERRIDES:
        command += ["--set", item]
    lost, problems = [], []
    for kill in range(args.kills + 1):
        arguments = command + (["--resume"] if kill else ["--overwrite"])
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        if kill == args.kills:  # the last round: let it reach its next checkpoint, then stop it politely
            resumed_from = _checkpoint_iteration(run)
            while _checkpoint_iteration(run) <= resumed_from and process.poll() is None:
                time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
            break
        time.sleep(rng.uniform(6.0, 20.0))  # start-up takes ~5 s: some kills land before the first step
        process.kill()
        process.wait()
        reached, saved = _logged_iteration(run), _checkpoint_iteration(run)
        lost.append(max(reached - saved, 0))
        problems += _torn_files(run)
        print(f"kill {kill + 1}: at iteration {reached}, last.pt at {saved}: {lost[-1]} iterations lost", flush=True)
    problems += _torn_files(run)
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")]
    print(
        f"\n{args.kills} kills: iterations lost per kill {lost} (max {max(lost, default=0)}, checkpoint period "
        f"{CHECKPOINT_PERIOD}); temporary files left after the final run: {leftovers or 'none'}; "
        f"unreadable files: {problems or 'none'}; final last.pt at iteration {_checkpoint_iteration(run)}"
    )


def _logged_iteration(run: Path) -> int:
    """The last complete iteration in metrics.jsonl (a line torn by the kill is skipped)."""
    best = 0
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                best = max(best, int(json.loads(line).get("iteration", 0)))
            except (ValueError, AttributeError):
                continue
    return best


def _checkpoint_iteration(run: Path) -> int:
    return int(load_checkpoint(run / "last.pt")["iteration"]) if (run / "last.pt").exists() else 0


def _torn_files(run: Path) -> list[str]:
    """Outputs that do not read back (a half-written checkpoint or config)."""
    problems = []
    if (run / "last.pt").exists():
        try:
            load_checkpoint(run / "last.pt")
        except Exception as error:  # noqa: BLE001 - any failure to read is what this script looks for
            problems.append(f"last.pt: {error}")
    return problems


if __name__ == "__main__":
    main()
