"""Decoding and fusion as a share of the network forward, for a trained checkpoint on the images of a split: the
issue's bound is decoding ≤ 10 % of the forward.

    python benchmarks/decode_share.py --checkpoint runs/demo/train/last.pt --root runs/demo/data [--split val]
    python benchmarks/decode_share.py ... --set solo.score_threshold=0     # every local maximum a candidate

Per image (batch 1, CPU unless --device): the network forward, the post-processor (SOLOv2: point NMS, masks of the
candidates, Matrix NMS, resize; Mask R-CNN: pasting) and fusion, each timed separately; the medians over the split
are printed, with the number of instances decoded per image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from lpsctl.data.dataset import collate_batch
from lpsctl.engine.fuse import empty_instances, fuse_one
from lpsctl.engine.inference import load_model, split_dataset
from lpsctl.postprocess.postprocessor import build_postprocessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="runtime --set (decoding)")
    args = parser.parse_args()
    device = torch.device(args.device)
    model, config = load_model(args.checkpoint, device, overrides=args.overrides)
    postprocessor = build_postprocessor(config, instance_geometry=model.instance_geometry)
    dataset = split_dataset(config, args.root, args.split)
    times: dict[str, list[float]] = {"network": [], "decoding": [], "fusion": []}
    counts = []

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    with torch.inference_mode():
        for index in range(len(dataset)):
            batch = collate_batch([dataset[index]], size_divisor=config.data.size_divisor).to(device)
            start = clock()
            outputs = model(batch.images)
            decoded = clock()
            prediction = postprocessor(outputs, batch.image_sizes, batch.original_sizes, batch.image_ids)[0]
            fused = clock()
            assert prediction.semantic_logits is not None
            instances = prediction.instances
            if instances is None:
                instances = empty_instances(*prediction.semantic_logits.shape[-2:])
            fuse_one(prediction.semantic_logits, instances, config.fusion)
            end = clock()
            if index > 0:  # the first image warms up
                times["network"].append(decoded - start)
                times["decoding"].append(fused - decoded)
                times["fusion"].append(end - fused)
            counts.append(len(instances))
    median = {stage: 1000 * statistics.median(values) for stage, values in times.items()}
    size = tuple(dataset[0].image.shape[-2:])
    print(f"{args.checkpoint} on {len(dataset)} {args.split} images of {size[0]}×{size[1]}, {device}, "
          f"{torch.get_num_threads()} threads; runtime --set: {args.overrides or 'none'}")  # fmt: skip
    print(f"instances decoded per image: median {statistics.median(counts):.0f}, max {max(counts)}")
    for stage, milliseconds in median.items():
        share = f" ({100 * milliseconds / median['network']:.1f} % of the network)" if stage != "network" else ""
        print(f"  {stage:9s} {milliseconds:8.1f} ms{share}")


if __name__ == "__main__":
    main()
