"""Parameter counts of the full-size Cityscapes model (B5, SPEC §3) by component, and one CPU forward at 512×1024.

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


def millions(module: torch.nn.Module | None) -> float:
    return 0.0 if module is None else sum(p.numel() for p in module.parameters()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    model = build_model(config).eval()
    print(
        f"model: {config.model.backbone}, norm {model.norm_name}, SOLOv2 {config.solo.stacked_convs}×"
        f"{config.solo.head_channels}, D={config.solo.kernel_dim}"
    )
    rows = [
        ("backbone", model.backbone),
        ("2-way FPN", model.fpn),
        ("semantic head", model.semantic_head),
        ("SOLOv2 head", model.instance_head),
    ]
    for name, part in rows:
        print(f"  {name:<14} {millions(part):7.2f} M")
    print(f"  {'total':<14} {millions(model):7.2f} M   (EfficientPS with Mask R-CNN head, paper: {PAPER_MILLIONS} M)")
    images = torch.randn(1, 3, args.height, args.width)
    with torch.inference_mode():
        start = time.perf_counter()
        outputs = model(images)
        seconds = time.perf_counter() - start
    assert outputs.semantic is not None and outputs.instance is not None
    print(
        f"forward 1×3×{args.height}×{args.width} on CPU ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads): {seconds:.2f} s; semantic {tuple(outputs.semantic.shape)}, "
        f"mask features {tuple(outputs.instance.mask_features.shape)}"
    )


if __name__ == "__main__":
    main()
