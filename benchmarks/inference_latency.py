"""Inference latency per image, broken down by stage, and the achieved GFLOP/s against this machine's matmul peak.

Stages: backbone + 2-way FPN, semantic head, SOLOv2 head (forward), SOLOv2 decoding (point NMS, masks, Matrix NMS,
resize), panoptic fusion. Weights are random (a fresh model), whose category scores (≈ 0.01) would pass no threshold:
decoding therefore runs with `solo.score_threshold=0`, so every local maximum of the category maps becomes a candidate
whose mask is computed — a pessimistic bound (random kernels give weak masks, so none survives to the end). FLOPs of
the network forward come from `torch.utils.flop_counter` (a multiply-add counts 2); the peak is the best of a few
square matmuls (4096² where they fit in ~10 s) in the same process.

Run: python benchmarks/inference_latency.py [--backbones b5 b0] [--height 1024 --width 2048] [--repeats 2]
     [--device cpu|cuda] [--amp off|fp16|bf16] [--channels-last]   (on a GPU: --amp fp16 --channels-last)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lpsctl.config import load_config
from lpsctl.engine.fuse import fuse_one
from lpsctl.models import build_model
from lpsctl.postprocess.solov2_decode import SOLOv2PostProcessor

LIGHT = ["solo.stacked_convs=2", "solo.head_channels=256", "solo.kernel_dim=128"]


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def best_time(function: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """Best wall time of `repeats` calls (CUDA work is waited for, so the first call's warm-up is left out)."""
    result, best = None, float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def matmul_peak_gflops(
    device: torch.device, dtype: torch.dtype, max_size: int = 4096, repeats: int = 3, budget_s: float = 10.0
) -> float:
    """The best GFLOP/s of `repeats` square matmuls, at the largest size up to `max_size` whose repeats fit in about
    `budget_s`: the size doubles from 256 while the next one's repeats (8× the time each) would fit. A dtype without
    a fast kernel here (bf16 on a CPU without avx512_bf16/AMX runs at ~1 GFLOP/s) is thus measured on a smaller
    product in seconds rather than on a 4096² one in many minutes."""
    size = 256
    while True:
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        seconds, _ = best_time(lambda: a @ b, 1, device)  # noqa: B023 (used at once)
        if size >= max_size or 8 * seconds * repeats > budget_s:
            break
        size *= 2
    seconds, _ = best_time(lambda: a @ b, repeats, device)
    return 2 * size**3 / seconds / 1e9


def profile(backbone: str, args: argparse.Namespace) -> dict[str, float]:
    overrides = [f"model.backbone=efficientnet-{backbone}", "model.norm=torch"] + (LIGHT if backbone == "b0" else [])
    config = load_config(None, overrides)
    device, height, width, repeats = torch.device(args.device), args.height, args.width, args.repeats
    model = build_model(config).eval().to(device)
    images = torch.randn(1, 3, height, width, device=device)
    if args.channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
    amp = torch.autocast(device.type, dtype=AMP_DTYPES.get(args.amp, torch.float32), enabled=args.amp != "off")
    with torch.inference_mode(), amp:
        features_time, features = best_time(lambda: model.fpn(model.backbone(images)), repeats, device)
        semantic_time, semantic = best_time(lambda: model.semantic_head(features), repeats, device)
        solo_time, solo = best_time(lambda: model.instance_head(features), repeats, device)
        sizes = [(height, width)]
        # every local maximum a candidate: the decoder's worst case
        busy = SOLOv2PostProcessor(model.instance_head.geometry, score_threshold=0.0)
        decode_time, instances = best_time(lambda: busy(solo, sizes, sizes), repeats, device)
        fusion_time, _ = best_time(lambda: fuse_one(semantic[0].float(), instances[0], config.fusion), repeats, device)
        with FlopCounterMode(display=False) as counter:
            model(images)
    network = features_time + semantic_time + solo_time
    return {
        "backbone + FPN": features_time,
        "semantic head": semantic_time,
        "SOLOv2 head": solo_time,
        "SOLOv2 decoding + Matrix NMS": decode_time,
        "panoptic fusion": fusion_time,
        "total": network + decode_time + fusion_time,
        "gflops": counter.get_total_flops() / 1e9,
        "network_seconds": network,
        "instances": float(len(instances[0])),
    }


def torchvision_anchor(args: argparse.Namespace) -> dict[str, float]:
    """torchvision's Mask R-CNN R50-FPN forward at the same size (its transform keeps 1024×2048: min_size = height,
    max_size = width), as a familiar reference for time and achieved GFLOP/s."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    device = torch.device(args.device)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=args.height, max_size=args.width)
    model = model.eval().to(device)
    images = [torch.rand(3, args.height, args.width, device=device)]
    with torch.inference_mode():
        seconds, _ = best_time(lambda: model(images), args.repeats, device)
        with FlopCounterMode(display=False) as counter:
            model(images)
    return {"seconds": seconds, "gflops": counter.get_total_flops() / 1e9}


def add_forward_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a timed forward: which backbones, at which input size, best of how many runs."""
    parser.add_argument("--backbones", nargs="+", default=["b5", "b0"])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peak-budget", type=float, default=10.0, help="seconds for each matmul-peak measurement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_forward_arguments(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="off", choices=["off", *AMP_DTYPES])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-anchor", action="store_true", help="skip torchvision's maskrcnn_resnet50_fpn")
    args = parser.parse_args()
    device = torch.device(args.device)
    peak = matmul_peak_gflops(device, AMP_DTYPES.get(args.amp, torch.float32), budget_s=args.peak_budget)
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    else:
        machine = f"{os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
    precision = "float32" if args.amp == "off" else args.amp
    layout = ", channels-last" if args.channels_last else ""
    size = f"1×3×{args.height}×{args.width}"
    print(f"{machine}; {precision} matmul peak {peak:.1f} GFLOP/s; input {size}{layout}, best of {args.repeats}")
    anchor = None if args.no_anchor else torchvision_anchor(args)
    if anchor is not None:
        print(f"anchor: torchvision maskrcnn_resnet50_fpn (random weights, min_size={args.height}): "
              f"{anchor['seconds']:.2f} s, {anchor['gflops']:.0f} GFLOP, {anchor['gflops'] / anchor['seconds']:.1f} "
              "GFLOP/s")  # fmt: skip
    for backbone in args.backbones:
        result = profile(backbone, args)
        achieved = result["gflops"] / result["network_seconds"]
        print(f"\nEfficientNet-{backbone.upper()} ({result['instances']:.0f} instances decoded)")
        print("| stage | seconds |")
        print("|---|---:|")
        for stage in ("backbone + FPN", "semantic head", "SOLOv2 head", "SOLOv2 decoding + Matrix NMS",
                      "panoptic fusion", "total"):  # fmt: skip
            print(f"| {stage} | {result[stage]:.3f} |")
        print(f"network forward: {result['gflops']:.0f} GFLOP, {achieved:.1f} GFLOP/s = {100 * achieved / peak:.0f} % "
              "of the matmul peak")  # fmt: skip
        if anchor is not None:
            print(f"against maskrcnn_resnet50_fpn: {result['network_seconds'] / anchor['seconds']:.2f}× its time, "
                  f"{achieved / (anchor['gflops'] / anchor['seconds']):.2f}× its GFLOP/s")  # fmt: skip


if __name__ == "__main__":
    main()
