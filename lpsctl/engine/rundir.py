"""The run folder `runs/<name>/`: last.pt, best.pt, metrics.jsonl, config.yaml; never overwritten silently."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpsctl.atomic import write_text_atomic
from lpsctl.config import Config, dump, from_dict, to_dict
from lpsctl.engine.checkpoint import load_checkpoint
from lpsctl.errors import CheckpointError, LpsctlError

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"  # pid and host of the process writing the run folder
#: config sections that define the network: a checkpoint only resumes into the same ones
MODEL_SECTIONS = ("model", "semantic", "solo", "maskrcnn")


@dataclass
class RunDir:
    """A training run's folder. Metrics also go to TensorBoard when it is installed (`pip install
    '.[tensorboard]'`), through a writer the run folder owns: `close()` ends it."""

    path: Path
    _writer: Any = field(default=None, init=False, repr=False)
    _writer_checked: bool = field(default=False, init=False, repr=False)
    _locked: bool = field(default=False, init=False, repr=False)

    def lock(self) -> None:
        """Claim the folder for this process (`run.lock`: pid and host, created exclusively): a second writer is
        refused with the holder's pid; a lock whose process no longer runs on this host (a killed run) is taken
        over. `close()` releases it; locking again while holding it is a no-op."""
        if self._locked:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_NAME
        for _ in range(3):
            try:
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host = _lock_holder(lock)
                if pid is None and time.time() - _mtime(lock) < 10:
                    pid, host = -1, "this host (starting)"  # a lock being written right now
                if pid is not None and (pid < 0 or _running(pid, host)):
                    raise LpsctlError(
                        f"run folder {self.path} is in use by process {pid} on {host}: wait for it to end or stop it "
                        f"(another run needs another --out; if that process is gone, delete {lock})"
                    ) from None
                log.warning("taking over %s, left by process %s that no longer runs", lock, pid)
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(f"{os.getpid()} {socket.gethostname()}\n")
            self._locked = True
            return
        raise LpsctlError(f"cannot lock run folder {self.path}: {lock} keeps reappearing")

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
        """Flush and close the TensorBoard writer (a later log line opens a new one); release the lock."""
        if self._writer is not None:
            self._writer.close()
        self._writer, self._writer_checked = None, False
        if self._locked:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            self._locked = False

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
    if resume and not run.last.exists():
        raise CheckpointError(f"nothing to resume: {run.last} does not exist (start the run without --resume)")
    run.lock()
    if resume:
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


def _lock_holder(lock: Path) -> tuple[int | None, str]:
    """(pid, host) written in a lock file; (None, "") when it is unreadable or still being written."""
    try:
        pid, host = lock.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def _running(pid: int, host: str) -> bool:
    """Whether process `pid` runs (a process on another host is assumed to)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
