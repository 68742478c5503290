"""Panoptic fusion of this checkout against an earlier revision's, interleaved on the same inputs, outputs compared.

Loads `lpsctl/postprocess/fusion.py` as it was at `--against` (git) next to the current one, fuses
`benchmarks/fusion_and_pq.py`'s synthetic image (1024×2048, 100 SOLOv2-like instances) with mask logits and with
binary masks, says whether both give the same ids and segments_info (exact ties may resolve either way), and times
them alternately (min / median of the rounds, wall and process CPU). Also counts the current code's top-level
tensor calls per image (torch.profiler).

Run: python benchmarks/fusion_ab.py --against e14b83c [--rounds 20] [--threads 2] [--height 1024 --width 2048]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

# this folder's sibling script
from fusion_and_pq import fake_outputs

from lpsctl.postprocess import fusion as current

REPO = Path(__file__).resolve().parents[1]


def load_revision(revision: str, folder: Path) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{revision}:lpsctl/postprocess/fusion.py"], cwd=REPO, capture_output=True, text=True
    )
    if source.returncode != 0:
        raise SystemExit(f"git show {revision}: {source.stderr.strip()}")
    path = folder / "fusion_before.py"
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location("fusion_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tensor_calls(logits: torch.Tensor, instances) -> int:  # noqa: ANN001
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        current.panoptic_fusion(logits, instances)
    return sum(1 for event in profiler.events() if event.cpu_parent is None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="git revision of the code to compare with")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        before = load_revision(args.against, Path(folder))
        print(f"fusion {args.height}x{args.width}, {args.instances} instances, {args.threads} threads, "
              f"{args.rounds} interleaved rounds; min / median ms")  # fmt: skip
        for binary in (False, True):
            logits, instances = fake_outputs(args.height, args.width, args.instances, seed=0)
            if binary:
                instances.mask_logits = None
            old, new = before.panoptic_fusion(logits, instances), current.panoptic_fusion(logits, instances)
            differing = int((old.ids != new.ids).sum())
            same = differing == 0 and old.segments_info == new.segments_info
            wall: dict[str, list[float]] = {"before": [], "now": []}
            cpu: dict[str, list[float]] = {"before": [], "now": []}
            for _ in range(args.rounds):
                for name, module in (("before", before), ("now", current)):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    module.panoptic_fusion(logits, instances)
                    wall[name].append(1000 * (time.perf_counter() - start))
                    cpu[name].append(1000 * (time.process_time() - start_cpu))
            figures = {
                name: f"{min(wall[name]):.1f} / {statistics.median(wall[name]):.1f} "
                f"(CPU median {statistics.median(cpu[name]):.1f})"
                for name in wall
            }
            ratio = statistics.median(wall["now"]) / statistics.median(wall["before"])
            kind = "binary masks" if binary else "mask logits"
            print(f"  {kind}: {args.against} {figures['before']}, now {figures['now']}; median ×{ratio:.2f}; "
                  f"same output: {same} ({differing} pixels differ)")  # fmt: skip
            if not binary:
                print(f"  tensor calls per image now (torch.profiler, top level): {tensor_calls(logits, instances)}")


if __name__ == "__main__":
    main()
