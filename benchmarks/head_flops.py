"""What each instance head costs in the full Cityscapes model: parameters and forward GFLOPs at 1024×2048 by
component, for SOLOv2 heads of several sizes and for EfficientPS's Mask R-CNN head, in one run.

    python benchmarks/head_flops.py                  # ~1 minute on 2 CPU cores (the Mask R-CNN forward is real)

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts 2). The SOLOv2 models run on the
`meta` device (shapes only: exact counts, no arithmetic); the Mask R-CNN model runs on CPU with random weights, as
its RoI stages depend on the data: 1000 proposals through the box head, and the mask head on the detections that
pass the score threshold (`--set maskrcnn.score_threshold=0` makes that the 100-detection worst case).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lpsctl.config import load_config
from lpsctl.models import build_model

#: SOLOv2 head sizes: (stacked_convs, head_channels, kernel_dim, mask_feature_channels)
SOLO_SIZES = {
    "SOLOv2 full (official: 4×512, D = 256)": (4, 512, 256, 128),
    "SOLOv2 light (2×256, D = 128)": (2, 256, 128, 128),
    "SOLOv2 2×256, D = 64": (2, 256, 64, 64),
    "SOLOv2 1×128, D = 64": (1, 128, 64, 64),
}


def count(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """GFLOPs of each component of one forward."""
    parts: dict[str, float] = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            features = model.backbone(images)
        parts["backbone"] = counter.get_total_flops() / 1e9
        with FlopCounterMode(display=False) as counter:
            pyramid = model.fpn(features)
        parts["2-way FPN"] = counter.get_total_flops() / 1e9
        with FlopCounterMode(display=False) as counter:
            model.semantic_head(pyramid)
        parts["semantic head"] = counter.get_total_flops() / 1e9
        with FlopCounterMode(display=False) as counter:
            model.instance_head(pyramid)
        parts["instance head"] = counter.get_total_flops() / 1e9
    return parts


def millions(module: torch.nn.Module | None) -> float:
    return 0.0 if module is None else sum(p.numel() for p in module.parameters()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    base = ["model.pretrained=false", "model.norm=torch", *args.overrides]
    rows: list[tuple[str, float, dict[str, Any]]] = []
    for name, (convs, channels, kernel, features) in SOLO_SIZES.items():
        config = load_config(None, [*base, f"solo.stacked_convs={convs}", f"solo.head_channels={channels}",
                                    f"solo.kernel_dim={kernel}", f"solo.mask_feature_channels={features}"])  # fmt: skip
        with torch.device("meta"):
            model = build_model(config).eval()
            images = torch.empty(1, 3, args.height, args.width)
        rows.append((name, millions(model.instance_head), count(model, images)))
    config = load_config(None, [*base, "model.instance_head=maskrcnn"])
    torch.manual_seed(0)
    model = build_model(config).eval()
    rows.append(("Mask R-CNN (EfficientPS)", millions(model.instance_head),
                 count(model, torch.randn(1, 3, args.height, args.width))))  # fmt: skip
    print(f"GFLOPs of one forward at {args.height}×{args.width} (backbone EfficientNet-B5, FPN 256 channels):")
    print("| instance head | head parameters | backbone | FPN | semantic | instance head | total |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, parameters, parts in rows:
        total = sum(parts.values())
        print(f"| {name} | {parameters:.2f} M | {parts['backbone']:.0f} | {parts['2-way FPN']:.0f} | "
              f"{parts['semantic head']:.0f} | {parts['instance head']:.0f} | {total:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
