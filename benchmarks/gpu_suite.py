"""The GPU figures in one run (a lent GPU machine's few minutes): inference and training steps of the full Cityscapes
model (EfficientNet-B5, 2-way FPN, semantic head, SOLOv2 or Mask R-CNN head) at 1024×2048, next to EfficientPS's
published 166 ms per image, 3.2 FPS and 11.8 GB (SPEC §4).

    python benchmarks/gpu_suite.py --out results.json                 # CUDA: ~3-5 minutes with torch.compile
    python benchmarks/gpu_suite.py --smoke --device cpu               # the same code path in seconds (B0, 128×256)

Inference (batch 1, random weights, `model.pretrained` off): the network forward in fp32, in fp16 autocast with
channels-last, and the latter under `torch.compile`; then the whole image as `lpsctl predict` runs it (network,
decoding, fusion) in the fastest setting. Training: one optimiser step (forward, every loss, backward, SGD) in fp16
with a GradScaler and channels-last, at 1024×2048 batch 1 (the official recipe's per-GPU batch) and 512×1024 batch 2,
random images with four instances. Times are medians of `--repeats` calls after warm-up, with the device
synchronised; memory is `torch.cuda.max_memory_allocated` of each case (CPU: not measured). Every case runs in a
try block with its own line, so one that fails (e.g. torch.compile) does not cost the others.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lpsctl.config import Config, load_config
from lpsctl.losses.criterion import build_criterion
from lpsctl.models import build_model
from lpsctl.postprocess.fusion import panoptic_fusion
from lpsctl.postprocess.postprocessor import build_postprocessor
from lpsctl.structures import Batch, InstanceTargets

HEADS = ("solov2", "maskrcnn")
#: EfficientPS (Mohan & Valada), SPEC §4: network inference per 1024×2048 image, whole-pipeline FPS, GPU memory
EFFICIENTPS = {"inference_ms": 166.0, "fps": 3.2, "memory_gb": 11.8}


def config_for(head: str, smoke: bool) -> Config:
    overrides = [f"model.instance_head={head}", "model.pretrained=false", "model.norm=torch"]
    if smoke:
        overrides += ["model.backbone=efficientnet-b0", "model.fpn_channels=64", "semantic.lsfe_channels=32"]
        overrides += ["solo.stacked_convs=1", "solo.head_channels=32", "solo.kernel_dim=32"]
        overrides += ["solo.mask_feature_channels=32", "maskrcnn.representation=64", "maskrcnn.mask_channels=32"]
    return load_config(Path(__file__).parents[1] / "configs" / "cityscapes_eps.yaml", overrides)


def timed(function: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """Median seconds of `repeats` calls after two warm-up calls (compilation and autotuning happen there)."""
    result = None
    for _ in range(2):
        result = function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def inference_cases(head: str, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    config = config_for(head, args.smoke)
    height, width = args.size
    model = build_model(config).eval().to(device)
    images = torch.randn(1, 3, height, width, device=device)
    fp16 = torch.float16 if device.type == "cuda" else torch.bfloat16
    rows = []
    half = "fp16" if fp16 == torch.float16 else "bf16"  # (CPU autocast: bf16)
    variants = [("fp32", None, False, False), (f"{half} + channels-last", fp16, True, False)]
    if not args.no_compile:
        variants.append((f"{half} + channels-last + compile", fp16, True, True))
    best: tuple[float, Callable[[], Any]] | None = None
    for name, dtype, channels_last, compiled in variants:
        row: dict[str, Any] = {"head": head, "case": f"inference {name}", "size": f"{height}x{width}"}
        try:
            network = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            inputs = images.to(memory_format=torch.channels_last) if channels_last else images
            forward = torch.compile(network) if compiled else network

            def run(forward: Callable[..., Any] = forward, inputs: torch.Tensor = inputs, dtype: Any = dtype) -> Any:
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):  # fmt: skip
                    return forward(inputs)

            reset_peak(device)
            seconds, _ = timed(run, args.repeats, device)
            row |= {"ms": 1000 * seconds, "memory_gb": peak_gb(device)}
            if best is None or seconds < best[0]:
                best = (seconds, run)
        except Exception as error:  # noqa: BLE001 - one failing variant (compile) must not cost the others
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        rows.append(row)
    if best is not None:
        postprocessor = build_postprocessor(config, instance_geometry=model.instance_geometry)
        sizes = [(height, width)]

        def whole() -> Any:
            outputs = best[1]()
            with torch.inference_mode():
                prediction = postprocessor(outputs, sizes, sizes, ["image"])[0]
                assert prediction.semantic_logits is not None and prediction.instances is not None
                return panoptic_fusion(prediction.semantic_logits.float(), prediction.instances, **_fusion(config))

        reset_peak(device)
        seconds, _ = timed(whole, args.repeats, device)
        rows.append({"head": head, "case": "whole image: network + decoding + fusion", "size": f"{height}x{width}",
                     "ms": 1000 * seconds, "fps": 1 / seconds, "memory_gb": peak_gb(device)})  # fmt: skip
    return rows


def _fusion(config: Config) -> dict[str, Any]:
    fusion = config.fusion
    return {key: getattr(fusion, key) for key in ("score_threshold", "overlap_threshold", "stuff_area", "logit_scale")}


def training_case(head: str, height: int, width: int, batch: int, args: argparse.Namespace, device: torch.device):
    config = config_for(head, args.smoke)
    half = "fp16" if device.type == "cuda" else "bf16"
    row: dict[str, Any] = {"head": head, "case": f"training step {half}, batch {batch}", "size": f"{height}x{width}"}
    try:
        model = build_model(config).train().to(device).to(memory_format=torch.channels_last)
        criterion = build_criterion(config, semantic=True, instance_geometry=model.instance_geometry)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        images = torch.randn(batch, 3, height, width, device=device).to(memory_format=torch.channels_last)
        semantic = torch.randint(0, 19, (batch, height, width), device=device)
        masks = torch.zeros(4, height, width, dtype=torch.bool, device=device)
        for k in range(4):  # four squares of growing size
            side = height // (8 - k)
            masks[k, k * side // 2 : k * side // 2 + side, k * side : k * side + side] = True
        classes = torch.tensor([0, 2, 3, 7], device=device)
        sizes = [(height, width)] * batch
        targets = Batch(images, semantic, torch.zeros_like(semantic, dtype=torch.bool), [masks] * batch,
                        [classes] * batch, [str(i) for i in range(batch)], sizes, sizes)  # fmt: skip
        instance_targets = [InstanceTargets(masks, classes)] * batch if model.needs_targets else None
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")

        def step() -> None:
            with torch.autocast(device.type, dtype=dtype):
                outputs = model(images, instance_targets)
            loss = sum(criterion(outputs, targets).values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        reset_peak(device)
        seconds, _ = timed(step, args.repeats, device)
        row |= {"ms": 1000 * seconds, "images_per_s": batch / seconds, "memory_gb": peak_gb(device)}
    except Exception as error:  # noqa: BLE001 - e.g. out of memory: the other cases still run
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--smoke", action="store_true", help="B0 at 128×256, 1 repeat: checks the code path")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.size = (128, 256) if args.smoke else (1024, 2048)
    if args.smoke:
        args.repeats = 1
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{name}; torch {torch.__version__}; EfficientPS: {EFFICIENTPS}", flush=True)
    rows: list[dict[str, Any]] = []
    height, width = args.size
    for head in args.heads.split(","):
        for row in inference_cases(head, args, device):
            rows.append(row)
            print(json.dumps(row), flush=True)
        for h, w, batch in ((height, width, 1), (height // 2, width // 2, 2)):
            rows.append(training_case(head, h, w, batch, args, device))
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        if "ms" in row and row["case"].startswith("inference"):
            row["vs_efficientps"] = row["ms"] / EFFICIENTPS["inference_ms"]
    if args.out is not None:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))
    failed = [row for row in rows if "error" in row]
    print(f"{len(rows) - len(failed)} cases measured, {len(failed)} failed", flush=True)


if __name__ == "__main__":
    main()
