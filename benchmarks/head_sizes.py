"""The SOLOv2 head's size against PQ (issue 14): the official head, a head with the FLOPs of EfficientPS's Mask R-CNN
head, and the light head, trained on equal terms at the demo's scale, next to what each costs at full size.

At full size (EfficientNet-B5, FPN 256, 1024×2048) the three heads are the official 4×512 towers with D = 256, the
same with 3 tower convs (234 GFLOPs, as Mask R-CNN's 235), and the light 2×256 with D = 128. At the demo's scale
(EfficientNet-B0, FPN 64, 128×256) each keeps its depth and has every width divided by 4, the FPN's ratio: the light
head becomes the demo's own. Every run is `compare_heads.py`'s SOLOv2 run (the demo recipe, `basic` scenes, the same
iterations and seeds) with only the head changed, heads rotating within each seed. Reported per head: parameters and
GFLOPs at both scales, PQ & co. at four fusion thresholds (mean ± std over seeds, and the per-seed difference to
the light head), training minutes, and the instance head's and decoding's latency per val image.

    python benchmarks/head_sizes.py                                 # ~90 minutes on a 2-core CPU
    python benchmarks/head_sizes.py --seeds 1 --iters 5 --val-images 4   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from compare_heads import FUSION_THRESHOLDS, add_run_arguments, latency, machine, spread, train_one
from head_flops import count, millions

from lpsctl.config import load_config
from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize
from lpsctl.models import build_model

#: full-size head shapes: (stacked_convs, head_channels, kernel_dim, mask_feature_channels)
HEADS = {
    "full": (4, 512, 256, 128),
    "Mask R-CNN budget": (3, 512, 256, 128),
    "light": (2, 256, 128, 128),
}
#: the full model's FPN width over the demo's (256 / 64)
WIDTH_RATIO = 4
METRICS = ("pq", "pq_things", "pq_stuff", "miou", "mask_ap")


def head_overrides(shape: tuple[int, int, int, int], ratio: int = 1) -> list[str]:
    convs, channels, kernel, features = shape
    return [
        f"solo.stacked_convs={convs}",
        f"solo.head_channels={channels // ratio}",
        f"solo.kernel_dim={kernel // ratio}",
        f"solo.mask_feature_channels={features // ratio}",
    ]


def costs(overrides: list[str], height: int, width: int) -> dict[str, float]:
    """Instance-head parameters (M) and GFLOPs (instance head, whole model) of one forward, counted on `meta`."""
    config = load_config(None, ["model.pretrained=false", "model.norm=torch", *overrides])
    with torch.device("meta"):
        model = build_model(config).eval()
        parts = count(model, torch.empty(1, 3, height, width))
    return {"parameters": millions(model.instance_head), "head": parts["instance head"], "total": sum(parts.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lpsctl-head-sizes")
    add_run_arguments(parser, minutes=40.0)
    args = parser.parse_args()
    torch.set_num_threads(args.workers)
    started = time.perf_counter()
    demo_scale = ["model.backbone=efficientnet-b0", "model.fpn_channels=64", "semantic.lsfe_channels=32"]
    results: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "heads": {}}
    for name, shape in HEADS.items():
        results["heads"][name] = {
            "full_size": costs(head_overrides(shape), 1024, 2048),
            "demo_scale": costs([*demo_scale, *head_overrides(shape, WIDTH_RATIO)], 128, 256),
            "runs": [],
        }
    root = args.out / "data-basic"
    synthesize(root, counts={"train": args.train_images, "val": args.val_images}, height=128, width=256,
               seed=0, style="basic", workers=args.workers)  # fmt: skip
    prepare(root, workers=args.workers)
    names = list(HEADS)
    for seed in range(args.seeds):
        for name in names[seed % len(names) :] + names[: seed % len(names)]:
            out = args.out / f"{name.replace(' ', '-')}-{seed}"
            run = train_one(root, out, "solov2", seed, args, head_overrides(HEADS[name], WIDTH_RATIO))
            results["heads"][name]["runs"].append(run | {"seed": seed})
            best = max(run["evaluations"].values(), key=lambda e: e["pq"])
            print(f"{name} seed {seed}: {run['iterations']} its in {run['train_minutes']:.1f} min, "
                  f"best PQ {best['pq']:.1f} (th {best['pq_things']:.1f})", flush=True)  # fmt: skip
    for name in names:
        checkpoint = args.out / f"{name.replace(' ', '-')}-0" / "last.pt"
        results["heads"][name]["latency"] = latency(checkpoint, root)
    results["minutes"] = (time.perf_counter() - started) / 60
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_report(results)


def print_report(results: dict[str, Any]) -> None:
    heads = results["heads"]
    print(f"\nmachine: {results['machine']}; {results['minutes']:.0f} minutes in all")
    print("\n| head | full size: head params | head GFLOPs | total GFLOPs | demo scale: head params | head GFLOPs "
          "| total GFLOPs | training minutes | instance head ms | decoding ms |")  # fmt: skip
    for name, head in heads.items():
        full, demo, ms = head["full_size"], head["demo_scale"], head["latency"]
        minutes = spread([run["train_minutes"] for run in head["runs"]])
        print(f"| {name} | {full['parameters']:.2f} M | {full['head']:.0f} | {full['total']:.0f} "
              f"| {demo['parameters']:.3f} M | {demo['head']:.2f} | {demo['total']:.2f} | {minutes} "
              f"| {ms['instance_head']:.1f} | {ms['decoding']:.1f} |")  # fmt: skip
    reference = sorted(heads["light"]["runs"], key=lambda run: run["seed"])
    for threshold in (str(t) for t in FUSION_THRESHOLDS):
        print(f"\nfusion score ≥ {threshold}: mean ± std over seeds; Δ = per-seed difference to the light head")
        print("| head | " + " | ".join(METRICS) + " | Δ pq | Δ pq_things |")
        for name, head in heads.items():
            runs = sorted(head["runs"], key=lambda run: run["seed"])
            cells = [spread([run["evaluations"][threshold][m] for run in runs]) for m in METRICS]
            for m in ("pq", "pq_things"):
                pairs = zip(runs, reference, strict=True)
                differences = [a["evaluations"][threshold][m] - b["evaluations"][threshold][m] for a, b in pairs]
                cells.append(spread(differences))
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
