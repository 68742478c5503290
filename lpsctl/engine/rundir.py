"""The run folder `runs/<name>/`: last.pt, best.pt, metrics.jsonl, config.yaml; never overwritten silently."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpsctl.atomic import write_text_atomic
from lpsctl.config import Config, dump, from_dict, to_dict
from lpsctl.engine.checkpoint import load_checkpoint
from lpsctl.errors import CheckpointError, LpsctlError

#: config sections that define the network: a checkpoint only resumes into the same ones
MODEL_SECTIONS = ("model", "semantic", "solo", "maskrcnn")


@dataclass
class RunDir:
    """A training run's folder. Metrics also go to TensorBoard when it is installed (`pip install
    '.[tensorboard]'`), through a writer the run folder owns: `close()` ends it."""

    path: Path
    _writer: Any = field(default=None, init=False, repr=False)
    _writer_checked: bool = field(default=False, init=False, repr=False)

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    def outputs(self) -> list[Path]:
        return [p for p in (self.last, self.best, self.metrics, self.config) if p.exists()]

    def log_metrics(self, values: dict[str, Any]) -> None:
        """Append one JSON line (NaN/inf written as null, so every line is valid JSON)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
        with self.metrics.open("a") as file:
            file.write(json.dumps(clean) + "\n")
        writer = self._tensorboard_writer()
        if writer is not None and "iteration" in values:
            for key, value in clean.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, values["iteration"])
            writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (a later log line opens a new one)."""
        if self._writer is not None:
            self._writer.close()
        self._writer, self._writer_checked = None, False

    def _tensorboard_writer(self) -> Any:
        if not self._writer_checked:
            self._writer_checked = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return None
            self._writer = SummaryWriter(log_dir=str(self.path))
        return self._writer

    def drop_metrics_after(self, iteration: int) -> None:
        """Forget the lines of iterations after `iteration`: a resumed run logs them again (and a line cut short by a
        killed process is no JSON)."""
        if not self.metrics.exists():
            return
        lines = self.metrics.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _iteration_of(line) <= iteration]
        if len(kept) < len(lines):
            write_text_atomic(self.metrics, "".join(kept))

    def write_config(self, config: Config) -> None:
        write_text_atomic(self.config, dump(config))


def check_resumable(run: RunDir, config: Config, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Prepare the run folder: the checkpoint to resume from, or a clean folder; refuses to overwrite silently."""
    if resume and overwrite:
        raise LpsctlError("--resume and --overwrite exclude each other: resume continues a run, overwrite restarts it")
    if resume:
        if not run.last.exists():
            raise CheckpointError(f"nothing to resume: {run.last} does not exist (start the run without --resume)")
        state = load_checkpoint(run.last)
        mismatch = config_mismatch(state["config"], to_dict(config))
        if mismatch:
            raise CheckpointError(
                f"{run.last} was trained with another model config ({'; '.join(mismatch[:6])}); "
                "resume with the same --config/--set, or start a new run folder"
            )
        run.write_config(config)
        run.drop_metrics_after(int(state["iteration"]))
        return state
    existing = run.outputs()
    if existing and not overwrite:
        raise LpsctlError(
            f"run folder {run.path} already holds a run ({', '.join(p.name for p in existing)}): "
            "pass --resume to continue it or --overwrite to start again"
        )
    for path in existing:
        path.unlink()
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    return None


def config_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'section.key: stored → current' for every differing key of the network-defining sections (the stored config
    read as this version reads it: sections it lacked take their defaults, legacy values their names)."""
    stored = to_dict(from_dict(stored))
    differences = []
    for section in MODEL_SECTIONS:
        old, new = stored.get(section, {}), current.get(section, {})
        for key in sorted(set(old) | set(new)):
            if key in {"pretrained", "backbone_weights", "norm"}:
                continue  # where initial weights came from, or which norm implementation runs, does not change shapes
            if old.get(key) != new.get(key):
                differences.append(f"{section}.{key}: {old.get(key)!r} in the checkpoint, {new.get(key)!r} now")
    return differences


def _iteration_of(line: str) -> float:
    try:
        return float(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):
        return math.inf
