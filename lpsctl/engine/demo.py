"""`lpsctl demo`: the whole pipeline on built-in synthetic data — synth, prepare, train eps, fuse, eval, overlays.

Every stage reuses what an earlier demo left in the output folder, so a second run only redoes what is missing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from lpsctl.atomic import write_text_atomic
from lpsctl.config import Config, FusionConfig, from_dict, load_config, to_dict
from lpsctl.data.prepare import prepare
from lpsctl.data.synthetic import synthesize
from lpsctl.engine.checkpoint import load_checkpoint
from lpsctl.engine.fuse import prepare_output
from lpsctl.engine.inference import load_model, predict, split_dataset
from lpsctl.engine.train import StepCallback, config_for_mode, train
from lpsctl.engine.validation import fuse_and_evaluate
from lpsctl.engine.visualize import render_prediction_folder
from lpsctl.structures import ProgressCallback

log = logging.getLogger(__name__)
#: the demo recipe: deviations from the config defaults, like the files in configs/ (shipped inside the package)
DEMO_CONFIG = "demo.yaml"
#: the synthetic scenes it learns: five stuff classes, cars and people, each class in its own colours
DEMO_STYLE = "basic"


@dataclass(frozen=True)
class DemoSizes:
    train_images: int = 300
    val_images: int = 30
    height: int = 128
    width: int = 256
    overlays: int = 4


@dataclass(frozen=True)
class DemoSummary:
    out: Path
    dataset: Path
    checkpoint: Path
    predictions: Path
    metrics: dict[str, Any]
    overlays: list[Path]
    reused: list[str]


def run_demo(
    out: Path,
    *,
    sizes: DemoSizes = DemoSizes(),
    overrides: tuple[str, ...] = (),
    workers: int = 2,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    on_step: StepCallback | None = None,
) -> DemoSummary:
    """Run (or complete) the demo in `out`: data/, train/, val/ (panoptic PNG + JSON, metrics.json), overlays/.

    Training is reused or resumed only when the data and the model config are those it was started with; `overwrite`
    starts everything again (an output folder from an older demo recipe needs it)."""
    root, run, predictions = out / "data", out / "train", out / "val"
    reused: list[str] = []
    counts = {"train": sizes.train_images, "val": sizes.val_images}
    report = synthesize(root, counts=counts, height=sizes.height, width=sizes.width, seed=0, style=DEMO_STYLE,
                        workers=workers, overwrite=overwrite, progress=progress)  # fmt: skip
    prepare(root, workers=workers, progress=progress)
    with resources.as_file(resources.files("lpsctl").joinpath(DEMO_CONFIG)) as recipe:
        config = load_config(recipe, [f"data.root={root}", *overrides])
    state = load_checkpoint(run / "last.pt") if (run / "last.pt").exists() else None
    if state is None or overwrite or report.written > 0 or _other_model(state, config):
        train(config, run, mode="eps", overwrite=True, on_step=on_step)
    elif int(state["iteration"]) >= config.solver.max_iters or state.get("finished"):
        reused.append("training")  # completed: at max_iters, or stopped on its time budget
    else:
        train(config, run, mode="eps", resume=True, on_step=on_step)
    checkpoint = run / "last.pt"
    metrics_path = predictions / "metrics.json"
    fusion = to_dict(config)["fusion"]
    earlier = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    if earlier.get("fusion") == fusion and metrics_path.stat().st_mtime >= checkpoint.stat().st_mtime:
        reused.append("evaluation")
        metrics = earlier
    else:
        metrics = _fuse_and_evaluate(checkpoint, root, predictions, workers, progress, config.fusion)
    overlays = render_prediction_folder(predictions, out / "overlays", images=root / "leftImg8bit" / "val",
                                        side_by_side=True, limit=sizes.overlays)  # fmt: skip
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    return DemoSummary(out, root, checkpoint, predictions, metrics, overlays, reused)


#: the sections that decide what training makes; another value in any of them (a --set) means training again
TRAINING_SECTIONS = ("data", "model", "semantic", "solo", "maskrcnn", "solver")


def _other_model(state: dict[str, Any], config: Config) -> bool:
    """The checkpoint was trained with another recipe: an older demo recipe, or other --set values of the model,
    data or solver (fusion and inference settings only change the evaluation, which is redone anyway)."""
    stored, current = to_dict(from_dict(state["config"])), to_dict(config_for_mode(config, "eps"))
    return any(stored.get(section) != current.get(section) for section in TRAINING_SECTIONS)


def _fuse_and_evaluate(
    checkpoint: Path,
    root: Path,
    predictions: Path,
    workers: int,
    progress: ProgressCallback | None,
    fusion: FusionConfig,
) -> dict[str, Any]:
    """Fuse the val split with this run's fusion settings (also when the training was reused) and evaluate it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, config = load_model(checkpoint, device, need="semantic")
    config = replace(config, fusion=fusion)
    prepare_output(predictions, overwrite=True)  # derived from the checkpoint: remade whenever it changes
    dataset = split_dataset(config, root, "val")
    predicted = predict(model, dataset, config, device, progress=progress)
    metrics = fuse_and_evaluate(predicted, config, root, "val", predictions, workers=workers, progress=progress)
    metrics["fusion"] = to_dict(config)["fusion"]  # what a rerun compares with its own
    write_text_atomic(predictions / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
