"""The CPU levers of the network forward, one run: each as seconds, achieved GFLOP/s and share of this machine's fp32
matmul peak, and as ratios to eager NCHW and to torchvision's `maskrcnn_resnet50_fpn` (the familiar reference),
all measured in the same process, with the largest output difference to eager.

Levers, each the network as `lpsctl` runs it (`TorchNetwork` with an `inference` section):
- eager NCHW, norms as trained (`inference.fold_norms=false inference.channels_last=false`);
- norms folded into the convolutions (`inference.fold_norms`, default);
- + channels-last (`inference.channels_last`, default: the input in NHWC, so every convolution runs in NHWC);
- + torch.compile (`inference.compile=true`, inductor; its compile time is printed apart);
- + bf16 autocast (`inference.precision=bf16`; fast where the CPU has avx512_bf16 or AMX, so left out of the default
  levers where it has neither), and with torch.compile;
- onnxruntime on the folded export (`lpsctl export --format onnx`, then `--model model.onnx`).
bf16 rows are also given as a share of the bf16 matmul peak.
`--profile` adds a torch.profiler breakdown of eager NCHW and of channels-last by operator.

Weights are random, with norm statistics and affine weights moved away from their initial values (so folding has
something to fold). FLOPs come from `torch.utils.flop_counter` (a multiply-add counts 2).

Run: python benchmarks/inference_levers.py [--backbones b5 b0] [--height 1024 --width 2048] [--repeats 2]
     [--levers eager folded channels-last compile bf16 onnxruntime] [--profile] [--no-anchor]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

# this folder's sibling script
from inference_latency import add_forward_arguments, best_time, matmul_peak_gflops, torchvision_anchor
from torch.utils.flop_counter import FlopCounterMode

from lpsctl.config import Config, load_config
from lpsctl.engine.deploy import ExportedNetwork, TorchNetwork, export_network, flatten
from lpsctl.models import build_model
from lpsctl.models.fold import fold_norms
from lpsctl.models.norm import ABN

LIGHT = ["solo.stacked_convs=2", "solo.head_channels=256", "solo.kernel_dim=128"]
LEVERS = ("eager", "folded", "channels-last", "compile", "bf16", "bf16-compile", "onnxruntime")
CPU = torch.device("cpu")


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
    return max(float((a.float() - b).abs().max()) for a, b in zip(outputs, reference, strict=True))


def with_inference(config: Config, **values: object) -> Config:
    return replace(config, inference=replace(config.inference, **values))


def torch_lever(model: torch.nn.Module, config: Config, fold: bool, **values: object) -> TorchNetwork:
    model = copy.deepcopy(model)
    if fold:
        fold_norms(model)
    return TorchNetwork(model, with_inference(config, fold_norms=fold, **values), CPU)  # type: ignore[arg-type]


def operator_shares(network: TorchNetwork, images: torch.Tensor, top: int = 8) -> list[tuple[str, float]]:
    """The operators that take most of one forward's CPU time (self time, as shares), from torch.profiler;
    convolutions are split by their weight's shape into depthwise, 1×1 and k×k dense ones."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        network(images)
    times: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages(group_by_input_shape=True):
        name, shapes = event.key, event.input_shapes
        if "conv" in name and len(shapes) > 1 and len(shapes[1]) == 4:
            weight = shapes[1]
            kind = "depthwise" if weight[1] == 1 else ("1×1" if weight[2:] == [1, 1] else "k×k dense")
            name = f"{kind} convolution"
        times[name] += event.self_cpu_time_total
    total = sum(times.values())
    return [(name, value / total) for name, value in sorted(times.items(), key=lambda item: -item[1])[:top]]


def measure(backbone: str, args: argparse.Namespace) -> tuple[float, list[tuple[str, float, float, str]]]:
    overrides = [f"model.backbone=efficientnet-{backbone}", "model.norm=torch"] + (LIGHT if backbone == "b0" else [])
    config = load_config(None, overrides)
    torch.manual_seed(0)
    model = build_model(config)
    randomise_norms(model)
    model.eval()
    images = torch.randn(1, 3, args.height, args.width)
    eager = torch_lever(model, config, fold=False, channels_last=False, precision="off")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        reference = flatten(eager(images))
    gflops = counter.get_total_flops() / 1e9
    rows: list[tuple[str, float, float, str]] = []

    def timed(name: str, run, note: str = "") -> None:  # noqa: ANN001
        seconds, outputs = best_time(lambda: flatten(run(images)), args.repeats, CPU)
        rows.append((name, seconds, largest_difference(outputs, reference), note))
        print(f"  {name}: {seconds:.2f} s", flush=True)

    folded = "norms folded + channels-last"
    #: lever → (row name, its inference settings on the folded model); "eager" is the unfolded NCHW model above
    settings = {
        "folded": ("norms folded", dict(channels_last=False, precision="off")),
        "channels-last": (f"{folded} (lpsctl's default)", dict(channels_last=True, precision="off")),
        "compile": (f"{folded} + torch.compile", dict(channels_last=True, precision="off", compile=True)),
        "bf16": (f"{folded} + bf16 autocast", dict(channels_last=True, precision="bf16")),
        "bf16-compile": (
            f"{folded} + bf16 autocast + torch.compile",
            dict(channels_last=True, precision="bf16", compile=True),
        ),
    }
    for lever in args.levers:
        if lever == "eager":
            timed("eager NCHW, norms as trained", eager)
        elif lever in settings:
            name, values = settings[lever]
            network = torch_lever(model, config, True, **values)
            note = ""
            if values.get("compile"):
                start = time.perf_counter()
                with torch.inference_mode():
                    network(images)
                note = f"compiled in {time.perf_counter() - start:.0f} s"
            timed(name, network, note)
    if "onnxruntime" in args.levers:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.onnx"
            start = time.perf_counter()
            export_network(model, config, path, fmt="onnx", height=args.height, width=args.width)
            exported = ExportedNetwork(path, CPU)
            note = f"exported in {time.perf_counter() - start:.0f} s"
            timed("onnxruntime, folded export", exported, note)
    if args.profile:
        for name, network in (
            ("eager NCHW", eager),
            ("channels-last", torch_lever(model, config, True, channels_last=True, precision="off")),
        ):
            with torch.inference_mode():
                shares = operator_shares(network, images)
            print(f"  profile, {name}: " + ", ".join(f"{op} {100 * share:.0f} %" for op, share in shares))
    return gflops, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_forward_arguments(parser)
    parser.add_argument("--levers", nargs="+", choices=LEVERS, help="default: all (bf16 only with native bf16)")
    parser.add_argument("--profile", action="store_true", help="operator shares of eager NCHW and channels-last")
    parser.add_argument("--no-anchor", action="store_true", help="skip torchvision's maskrcnn_resnet50_fpn")
    args = parser.parse_args()
    args.device = "cpu"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    bf16 = "native bf16 (avx512_bf16/amx)" if native else "no native bf16"
    if args.levers is None:  # bf16 without native support runs at ~1 GFLOP/s: hours for B5 at full size
        args.levers = [lever for lever in LEVERS if native or not lever.startswith("bf16")]
    peak = matmul_peak_gflops(CPU, torch.float32, budget_s=args.peak_budget)
    bf16_peak = matmul_peak_gflops(CPU, torch.bfloat16, budget_s=args.peak_budget)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"{bf16}, torch {torch.__version__}; matmul peak fp32 {peak:.1f}, bf16 {bf16_peak:.1f} GFLOP/s; "
          f"input 1×3×{args.height}×{args.width}, best of {args.repeats}")  # fmt: skip
    anchor_rate = None
    if not args.no_anchor:
        anchor = torchvision_anchor(args)
        anchor_rate = anchor["gflops"] / anchor["seconds"]
        print(f"anchor: torchvision maskrcnn_resnet50_fpn {anchor['seconds']:.2f} s, {anchor['gflops']:.0f} GFLOP, "
              f"{anchor_rate:.1f} GFLOP/s ({100 * anchor_rate / peak:.0f} % of the peak)")  # fmt: skip
    for backbone in args.backbones:
        print(f"\nEfficientNet-{backbone.upper()}:", flush=True)
        gflops, rows = measure(backbone, args)
        eager_seconds = rows[0][1]
        print(f"network forward {gflops:.0f} GFLOP")
        print("| lever | s/image | GFLOP/s | % of peak | × first row | × anchor's GFLOP/s | max abs Δ | |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for name, seconds, difference, note in rows:
            rate = gflops / seconds
            versus = f"{rate / anchor_rate:.2f}" if anchor_rate else "–"
            if "bf16" in name:
                note = f"{100 * rate / bf16_peak:.0f} % of the bf16 peak" + (f"; {note}" if note else "")
            print(f"| {name} | {seconds:.2f} | {rate:.1f} | {100 * rate / peak:.0f} | {eager_seconds / seconds:.2f} | "
                  f"{versus} | {difference:.1e} | {note} |")  # fmt: skip


if __name__ == "__main__":
    main()
