"""Network forward latency on CPU, one run: torch eager, eager with the norms folded into the convolutions, and the
folded network exported to ONNX and run in onnxruntime; each as a ratio to eager, with the largest output difference
to eager (the folding and the export must not change the outputs).

Weights are random, with norm statistics and affine weights moved away from their initial values (so the folding
has something to fold). The ONNX file is exported at the timed size (`lpsctl export` does the same).

Run: python benchmarks/deploy_latency.py [--backbones b0 b5] [--height 1024 --width 2048] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from inference_latency import best_time  # this folder's sibling script (python puts it on sys.path)

from lpsctl.config import load_config
from lpsctl.engine.deploy import ExportedNetwork, FlatNetwork, export_network, flatten
from lpsctl.models import build_model
from lpsctl.models.fold import fold_norms
from lpsctl.models.norm import ABN

LIGHT = ["solo.stacked_convs=2", "solo.head_channels=256", "solo.kernel_dim=128"]


def randomise_norms(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ABN):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)


def largest_difference(outputs: tuple, reference: tuple) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(outputs, reference, strict=True))


def measure(backbone: str, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    overrides = [f"model.backbone=efficientnet-{backbone}", "model.norm=torch"] + (LIGHT if backbone == "b0" else [])
    config = load_config(None, overrides)
    torch.manual_seed(0)
    model = build_model(config)
    randomise_norms(model)
    model.eval()
    images = torch.randn(1, 3, args.height, args.width)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        eager_time, eager = best_time(lambda: FlatNetwork(model)(images), args.repeats, cpu)
        folded_model = copy.deepcopy(model)
        fold_norms(folded_model)
        folded_time, folded = best_time(lambda: FlatNetwork(folded_model)(images), args.repeats, cpu)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_network(model, config, path, fmt="onnx", height=args.height, width=args.width)
        network = ExportedNetwork(path, cpu)
        onnx_time, exported = best_time(lambda: flatten(network(images)), args.repeats, cpu)
    return {
        "torch eager": (eager_time, 0.0),
        "eager, norms folded": (folded_time, largest_difference(folded, eager)),
        "onnxruntime (folded)": (onnx_time, largest_difference(exported, eager)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["b0", "b5"])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("| model | runtime | s/image | × eager | max |Δ| to eager |\n|---|---|---:|---:|---:|")
    for backbone in args.backbones:
        results = measure(backbone, args)
        eager = results["torch eager"][0]
        for name, (seconds, difference) in results.items():
            print(f"| {backbone.upper()} | {name} | {seconds:.2f} | {eager / seconds:.2f} | {difference:.1e} |")
    print(
        f"input 1×3×{args.height}×{args.width}, best of {args.repeats}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
    )


if __name__ == "__main__":
    main()
