"""Training throughput (images/s) and peak memory of the joint model, one configuration per child process.

Each case runs a few SGD iterations of `PanopticNet` (forward, losses, backward, step) on a batch of random images
with a few square instances, after one warm-up iteration. Peak memory is the child's max RSS on CPU, or
`torch.cuda.max_memory_allocated` on CUDA.

Every case runs in each precision of --amp and each memory layout of --layouts (NCHW, channels-last with the images
converted too), and its images/s is printed as a ratio to the first setting (fp32 NCHW by default), measured in the
same run.

Run: python benchmarks/train_speed.py [--iterations 3] [--device cpu|cuda] [--cases b0:256x512:4 b5:512x1024:1]
     [--norms torch iabn] [--amp off bf16 fp16] [--layouts nchw cl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

LIGHT = ["solo.stacked_convs=2", "solo.head_channels=256", "solo.kernel_dim=128"]


def run_case(backbone: str, height: int, width: int, batch: int, norm: str, args: argparse.Namespace) -> dict:
    from lpsctl.config import load_config
    from lpsctl.losses.criterion import build_criterion
    from lpsctl.models import build_model
    from lpsctl.structures import Batch

    overrides = [f"model.backbone=efficientnet-{backbone}", f"model.norm={norm}"] + (LIGHT if backbone == "b0" else [])
    config = load_config(None, overrides)
    model = build_model(config).to(args.device).train()
    criterion = build_criterion(config, semantic=True, instance_geometry=model.instance_geometry)
    images = torch.randn(batch, 3, height, width, device=args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    semantic = torch.randint(0, 19, (batch, height, width), device=args.device)
    masks = torch.zeros(4, height, width, dtype=torch.bool, device=args.device)
    for k in range(4):  # four squares of growing size
        size = height // (8 - k)
        masks[k, k * size // 2 : k * size // 2 + size, k * size : k * size + size] = True
    classes = torch.tensor([0, 2, 3, 7], device=args.device)
    sizes = [(height, width)] * batch
    targets = Batch(images, semantic, torch.zeros_like(semantic, dtype=torch.bool), [masks] * batch,
                    [classes] * batch, [str(index) for index in range(batch)], sizes, sizes)  # fmt: skip
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp)
    scaler = torch.amp.GradScaler(args.device, enabled=args.amp == "fp16")

    def step() -> None:
        with torch.autocast(args.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = model(images)
        loss = sum(criterion(outputs, targets).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iterations):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.iterations
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB → GiB
    return {"seconds_per_iteration": seconds, "images_per_s": batch / seconds, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["b0:256x512:4", "b5:512x1024:1"], help="backbone:HxW:batch")
    parser.add_argument("--norms", nargs="+", default=["torch", "iabn"])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", nargs="+", default=["off"], choices=["off", "fp16", "bf16"])
    parser.add_argument("--layouts", nargs="+", default=["nchw"], choices=["nchw", "cl"])
    parser.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)  # a child's layout
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backbone, size, batch, norm = args.child.split(":")
        height, width = map(int, size.split("x"))
        args.amp = args.amp[0]
        print(json.dumps(run_case(backbone, height, width, int(batch), norm, args)))
        return
    from lpsctl.models.norm import iabn_available

    norms = [n for n in args.norms if n != "iabn" or iabn_available()]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":")[1].strip() for line in cpuinfo if "model name" in line), platform.machine())
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}, "
          f"{args.iterations} timed iterations after 1 warm-up")  # fmt: skip
    print(
        "| model | input | batch | norm | precision | layout | s/iteration | images/s | × first | peak memory (GiB) |"
    )
    print("|---|---|---:|---|---|---|---:|---:|---:|---:|")
    for case in args.cases:
        backbone, size, batch = case.split(":")
        for norm in norms:
            anchor = None
            for amp in args.amp:
                for layout in args.layouts:
                    command = [sys.executable, __file__, "--child", f"{case}:{norm}", "--iterations",
                               str(args.iterations), "--device", args.device, "--amp", amp]  # fmt: skip
                    command += ["--channels-last"] if layout == "cl" else []
                    run = subprocess.run(command, check=True, capture_output=True, text=True)
                    result = json.loads(run.stdout.strip().splitlines()[-1])
                    anchor = anchor or result["images_per_s"]
                    precision = "fp32" if amp == "off" else amp
                    ratio = result["images_per_s"] / anchor
                    print(f"| {backbone.upper()} | {size} | {batch} | {norm} | {precision} | {layout} | "
                          f"{result['seconds_per_iteration']:.2f} | {result['images_per_s']:.2f} | {ratio:.2f} | "
                          f"{result['peak_gib']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
