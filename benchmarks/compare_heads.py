"""SOLOv2 vs Mask R-CNN inside EfficientPS: the controlled comparison (issue 11), on this machine, in one run.

Both models are the demo's joint model (EfficientNet-B0 from scratch, 64-channel 2-way FPN, the same semantic head,
AdamW, poly schedule, batch 4 of 128×256 crops) and differ only in the instance head: the demo's light SOLOv2, or
EfficientPS's Mask R-CNN head (SPEC §3.8) sized to the same FPN (box head FC 256, mask head 64 channels, anchors
8-64 px for 128-pixel-high images). Every (setting, seed) trains both heads for the same number of iterations under
the same wall-clock cap, alternating heads so that machine load falls on both alike.

Settings: the demo's `basic` scenes and the harder `street` scenes (more classes, smaller and more numerous things).
Reported per head as mean ± std over seeds, and the SOLOv2 − Mask R-CNN difference as mean ± std of the per-seed
differences: PQ, PQ_th, PQ_st, SQ, RQ, mIoU, mask AP (COCOeval), per-class PQ of the things, iterations and training
time; at four fusion score thresholds (0.2, 0.3, the demo's 0.4, EfficientPS's 0.5: SOLOv2's scores, category
probability × maskness, run lower than Mask R-CNN's softmax scores), and Mask R-CNN also with its head's score
threshold at 0.05 (the official 0.5 removes the low-score detections that mask AP rewards). Then parameters and
inference latency per stage (backbone + FPN, semantic head, instance head, decoding, fusion), ms per val image.

    python benchmarks/compare_heads.py                 # ~65 minutes on a 2-core CPU
    python benchmarks/compare_heads.py --seeds 1 --iters 20 --settings basic   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lpsctl.config import Config, load_config, to_dict
from lpsctl.data.cityscapes import coco_json
from lpsctl.data.dataset import collate_batch
from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize
from lpsctl.engine.checkpoint import load_checkpoint
from lpsctl.engine.export import coco_image_ids, export_masks
from lpsctl.engine.inference import load_model, predict, split_dataset
from lpsctl.engine.rundir import config_mismatch
from lpsctl.engine.train import config_for_mode, train
from lpsctl.engine.validation import fuse_and_evaluate
from lpsctl.evaluation.coco import evaluate_masks
from lpsctl.labels import THING_NAMES
from lpsctl.models import PanopticNet
from lpsctl.postprocess.fusion import panoptic_fusion
from lpsctl.postprocess.postprocessor import build_postprocessor
from lpsctl.structures import PanopticOutputs

HEADS = ("solov2", "maskrcnn")
#: the Mask R-CNN head at the demo's scale: the official layout, widths matched to the 64-channel FPN
MASKRCNN_AT_DEMO_SCALE = (
    "maskrcnn.anchor_sizes=[8, 16, 32, 64]",
    "maskrcnn.representation=256",
    "maskrcnn.mask_channels=64",
)
FUSION_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)
METRICS = ("pq", "pq_things", "pq_stuff", "sq", "rq", "miou", "mask_ap")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lpsctl-compare-heads")
    parser.add_argument("--settings", default="basic,street", help="synthetic styles, comma-separated")
    add_run_arguments(parser, minutes=10.0)
    args = parser.parse_args()
    torch.set_num_threads(args.workers)
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    for style in args.settings.split(","):
        root = args.out / f"data-{style}"
        synthesize(root, counts={"train": args.train_images, "val": args.val_images}, height=128, width=256,
                   seed=0, style=style, workers=args.workers)  # fmt: skip
        prepare(root, workers=args.workers)
        for seed in range(args.seeds):
            for head in HEADS if seed % 2 == 0 else HEADS[::-1]:
                run = train_one(root, args.out / f"{style}-{head}-{seed}", head, seed, args)
                run |= {"style": style, "head": head, "seed": seed}
                results["runs"].append(run)
                print(f"{style} {head} seed {seed}: {summary_line(run)}", flush=True)
    results["latency"] = {
        head: latency(args.out / f"basic-{head}-0" / "last.pt", args.out / "data-basic") for head in HEADS
    }
    results["minutes"] = (time.perf_counter() - started) / 60
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_report(results)


def add_run_arguments(parser: argparse.ArgumentParser, *, minutes: float) -> None:
    """The options `recipe` and `train_one` read: seeds, run length and cap, data sizes, threads."""
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=400, help="training iterations of every run")
    parser.add_argument("--minutes", type=float, default=minutes, help="wall-clock cap of every run")
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def recipe(root: Path, head: str, seed: int, args: argparse.Namespace, extra: Sequence[str] = ()) -> Config:
    """The demo recipe with `head`, `seed`, the run length of `args` and `extra` overrides."""
    overrides = [
        f"data.root={root}",
        f"model.instance_head={head}",
        f"solver.seed={seed}",
        f"solver.max_iters={args.iters}",
        f"solver.max_minutes={args.minutes}",
        f"data.num_workers={max(args.workers - 1, 0)}",
        *(MASKRCNN_AT_DEMO_SCALE if head == "maskrcnn" else ()),
        *extra,
    ]
    with resources.as_file(resources.files("lpsctl").joinpath("demo.yaml")) as path:
        return load_config(path, overrides)


def train_one(
    root: Path, out: Path, head: str, seed: int, args: argparse.Namespace, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """Train (or reuse a finished run of the same recipe in `out`: an interrupted benchmark continues), evaluate."""
    config = recipe(root, head, seed, args, extra)
    timing = out / "timing.json"
    if not _finished(out, config):
        started = time.perf_counter()
        summary = train(config, out, mode="eps", overwrite=True)
        minutes = (time.perf_counter() - started) / 60
        timing.write_text(json.dumps({"iterations": summary.iterations, "train_minutes": minutes}))
    run: dict[str, Any] = json.loads(timing.read_text())
    model, config = load_model(out / "last.pt", torch.device("cpu"))
    run["parameters"] = {"total": count(model), "instance_head": count(model.instance_head)}
    run["evaluations"] = evaluate(model, config, root, out)
    if head == "maskrcnn":  # the head's own score threshold, as mask AP benchmarks set it
        model.instance_head.roi_heads.score_thresh = 0.05
        run["evaluations_head_0.05"] = evaluate(model, config, root, out)
    return run


def _finished(out: Path, config: Config) -> bool:
    if not (out / "last.pt").is_file() or not (out / "timing.json").is_file():
        return False
    state = load_checkpoint(out / "last.pt")
    return bool(state.get("finished")) and not config_mismatch(state["config"], to_dict(config_for_mode(config, "eps")))


def count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def evaluate(model: PanopticNet, config: Config, root: Path, out: Path) -> dict[str, dict[str, Any]]:
    """PQ & co. at each fusion threshold, and mask AP, on the val split."""
    predictions = list(predict(model, split_dataset(config, root, "val"), config, torch.device("cpu")))
    masks = out / "masks.json"
    export_masks(predictions, masks, coco_image_ids(coco_json(root, "val")))
    mask_ap = evaluate_masks(coco_json(root, "val"), masks)["AP"] * 100
    evaluations = {}
    for threshold in FUSION_THRESHOLDS:
        fused = replace(config, fusion=replace(config.fusion, score_threshold=threshold))
        result = fuse_and_evaluate(predictions, fused, root, "val", out / f"val-{threshold}", workers=2)
        evaluations[str(threshold)] = {
            "pq": 100 * result["All"]["pq"],
            "pq_things": 100 * result["Things"]["pq"],
            "pq_stuff": 100 * result["Stuff"]["pq"],
            "sq": 100 * result["All"]["sq"],
            "rq": 100 * result["All"]["rq"],
            "miou": 100 * result["miou"],
            "mask_ap": mask_ap,
            "per_class_pq": {
                name: 100 * result["per_class"][name]["pq"] for name in THING_NAMES if name not in result["absent"]
            },
        }
    return evaluations


def latency(checkpoint: Path, root: Path) -> dict[str, float]:
    """Mean ms per val image of each inference stage of a trained model (batch 1, fp32, CPU, norms folded)."""
    model, config = load_model(checkpoint, torch.device("cpu"))
    postprocessor = build_postprocessor(config, instance_geometry=model.instance_geometry)
    dataset = split_dataset(config, root, "val")
    totals: dict[str, float] = dict.fromkeys(
        ("backbone_fpn", "semantic_head", "instance_head", "decoding", "fusion"), 0.0
    )
    with torch.inference_mode():
        for index in range(len(dataset)):
            batch = collate_batch([dataset[index]], size_divisor=config.data.size_divisor)
            tick = time.perf_counter()
            features = model.fpn(model.backbone(batch.images))
            totals["backbone_fpn"] += time.perf_counter() - tick
            outputs = []
            for stage, head in (("semantic_head", model.semantic_head), ("instance_head", model.instance_head)):
                tick = time.perf_counter()
                outputs.append(head(features))
                totals[stage] += time.perf_counter() - tick
            tick = time.perf_counter()
            prediction = postprocessor(
                PanopticOutputs(*outputs), batch.image_sizes, batch.original_sizes, batch.image_ids
            )[0]
            totals["decoding"] += time.perf_counter() - tick
            tick = time.perf_counter()
            assert prediction.semantic_logits is not None and prediction.instances is not None
            panoptic_fusion(
                prediction.semantic_logits, prediction.instances, score_threshold=config.fusion.score_threshold
            )
            totals["fusion"] += time.perf_counter() - tick
    return {stage: 1000 * seconds / len(dataset) for stage, seconds in totals.items()}


def summary_line(run: dict[str, Any]) -> str:
    e = run["evaluations"]["0.4"]
    return (f"{run['iterations']} its in {run['train_minutes']:.1f} min, PQ {e['pq']:.1f} (th {e['pq_things']:.1f}, "
            f"st {e['pq_stuff']:.1f}), mIoU {e['miou']:.1f}, mask AP {e['mask_ap']:.1f}")  # fmt: skip


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:6.1f} ± {std:4.1f}"


def metric(run: dict[str, Any], evaluation: str, threshold: str, name: str) -> float:
    """One figure of a run: a METRICS name, or "PQ <thing class>"."""
    values = run[evaluation][threshold]
    return values["per_class_pq"][name[3:]] if name.startswith("PQ ") else values[name]


def print_report(results: dict[str, Any]) -> None:
    runs = results["runs"]
    print(f"\nmachine: {results['machine']}; {results['minutes']:.0f} minutes in all")
    for style in dict.fromkeys(run["style"] for run in runs):
        by_head = {
            head: sorted((r for r in runs if r["style"] == style and r["head"] == head), key=lambda r: r["seed"])
            for head in HEADS
        }
        for threshold in (str(t) for t in FUSION_THRESHOLDS):
            print(
                f"\n{style} scenes, fusion score ≥ {threshold} (mean ± std over seeds; difference: SOLOv2 − Mask R-CNN)"
            )
            print(f"{'metric':<16}{'SOLOv2':>15}{'Mask R-CNN':>15}{'difference':>15}{'Mask R-CNN head 0.05':>23}")
            classes = by_head["solov2"][0]["evaluations"][threshold]["per_class_pq"]
            for name in [*METRICS, *(f"PQ {n}" for n in classes)]:
                solo = [metric(r, "evaluations", threshold, name) for r in by_head["solov2"]]
                mask = [metric(r, "evaluations", threshold, name) for r in by_head["maskrcnn"]]
                low = [metric(r, "evaluations_head_0.05", threshold, name) for r in by_head["maskrcnn"]]
                difference = [a - b for a, b in zip(solo, mask, strict=True)]
                print(f"{name:<16}{spread(solo):>15}{spread(mask):>15}{spread(difference):>15}{spread(low):>23}")
        for head in HEADS:
            iterations = spread([r["iterations"] for r in by_head[head]])
            print(f"{head}: {iterations} iterations, {spread([r['train_minutes'] for r in by_head[head]])} minutes")
    print("\nparameters and inference latency per val image (ms, 128×256, batch 1, CPU, norms folded):")
    for head in HEADS:
        parameters = next(r["parameters"] for r in runs if r["head"] == head)
        stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in results["latency"][head].items())
        total, own = parameters["total"] / 1e6, parameters["instance_head"] / 1e6
        print(f"{head}: {total:.2f} M parameters (instance head {own:.2f} M); {stages}")


if __name__ == "__main__":
    main()
