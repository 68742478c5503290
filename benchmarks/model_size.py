"""Parameter counts of the full-size Cityscapes model (B5, SPEC §3) by component, with each instance head (SOLOv2,
EfficientPS's Mask R-CNN with the 3×3 and with the separable RPN conv), and one CPU forward at 512×1024 each.

Run: python benchmarks/model_size.py [--config configs/cityscapes_eps.yaml] [--set k=v ...] [--height 512 --width 1024]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from lpsctl.config import load_config
from lpsctl.models import build_model

PAPER_MILLIONS = 40.89  # EfficientPS (Mask R-CNN head), paper Table 1
HEADS = {
    "SOLOv2": ("model.instance_head=solov2",),
    "Mask R-CNN": ("model.instance_head=maskrcnn",),
    "Mask R-CNN, separable RPN": ("model.instance_head=maskrcnn", "maskrcnn.rpn_conv=separable"),
}


def millions(module: torch.nn.Module | None) -> float:
    return 0.0 if module is None else sum(p.numel() for p in module.parameters()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    for head, head_overrides in HEADS.items():
        config = load_config(args.config, [*args.overrides, *head_overrides])
        torch.manual_seed(0)
        model = build_model(config).eval()
        print(f"{head}: {config.model.backbone}, norm {model.norm_name}")
        rows = [
            ("backbone", model.backbone),
            ("2-way FPN", model.fpn),
            ("semantic head", model.semantic_head),
            ("instance head", model.instance_head),
        ]
        for name, part in rows:
            print(f"  {name:<14} {millions(part):7.2f} M")
        print(
            f"  {'total':<14} {millions(model):7.2f} M   (EfficientPS with Mask R-CNN head, paper: {PAPER_MILLIONS} M)"
        )
        images = torch.randn(1, 3, args.height, args.width)
        with torch.inference_mode():
            start = time.perf_counter()
            outputs = model(images)
            seconds = time.perf_counter() - start
        assert outputs.semantic is not None and outputs.instance is not None
        print(f"  forward 1×3×{args.height}×{args.width} on CPU ({machine}): {seconds:.2f} s")


if __name__ == "__main__":
    main()
