"""The run folder `runs/<name>/`: last.pt, best.pt, metrics.jsonl, config.yaml; never overwritten silently."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpsctl.atomic import write_text_atomic
from lpsctl.config import Config, dump, from_dict, to_dict
from lpsctl.errors import CheckpointError, LpsctlError

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"  # pid and host of the process writing the run folder
#: the holder touches its lock this often; a lock from another host untouched for LOCK_STALE_S is a dead run's
LOCK_HEARTBEAT_S, LOCK_STALE_S = 60.0, 300.0
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
    _heartbeat: threading.Event | None = field(default=None, init=False, repr=False)

    def holder(self) -> tuple[int, str] | None:
        """(pid, host) of another running process that holds the folder's lock; None when free, held by this process
        or left by a killed run: on this host, a pid that no longer runs; on another host (a requeued cluster job
        lands elsewhere), a lock its holder stopped touching LOCK_STALE_S ago."""
        lock = self.path / LOCK_NAME
        if not lock.exists():
            return None
        pid, host = _lock_holder(lock)
        age = time.time() - _mtime(lock)
        if pid is None and age < 10:
            return -1, "this host (starting)"  # a lock being written right now
        if pid is None or (pid, host) == (os.getpid(), socket.gethostname()):
            return None
        alive = _running(pid, host) if host == socket.gethostname() else age < LOCK_STALE_S
        return (pid, host) if alive else None

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
                holder = self.holder()
                if holder is not None:
                    raise LpsctlError(_in_use(self.path, *holder)) from None
                log.warning("taking over %s, left by a process that no longer runs", lock)
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(f"{os.getpid()} {socket.gethostname()}\n")
            self._locked = True
            self._heartbeat = _start_heartbeat(lock)
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
            if self._heartbeat is not None:
                self._heartbeat.set()
                self._heartbeat = None
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


def run_folder_conflict(path: Path, *, resume: bool, overwrite: bool) -> LpsctlError | None:
    """What stops a run from starting in the folder `path` with these flags (None when nothing does): conflicting
    flags, nothing to resume, a folder that holds a run, a lock held by a running process, a path that is a file.
    Reads only the folder (no torch import), so `lpsctl train` can refuse before it builds a model."""
    run = RunDir(Path(path))
    if resume and overwrite:
        return LpsctlError("--resume and --overwrite exclude each other: resume continues a run, overwrite restarts it")
    if run.path.exists() and not run.path.is_dir():
        return LpsctlError(f"--out {run.path} is a file, not a folder: give the run its own folder")
    if resume and not run.last.exists():
        return CheckpointError(f"nothing to resume: {run.last} does not exist (start the run without --resume)")
    holder = run.holder()
    if holder is not None:
        return LpsctlError(_in_use(run.path, *holder))
    existing = run.outputs()
    if existing and not resume and not overwrite:
        return LpsctlError(_holds_a_run(run.path, existing))
    return None


def check_resumable(run: RunDir, config: Config, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Prepare the run folder: the checkpoint to resume from, or a clean folder; refuses to overwrite silently."""
    from lpsctl.engine.checkpoint import load_checkpoint  # (torch: not needed by run_folder_conflict's callers)

    conflict = run_folder_conflict(run.path, resume=resume, overwrite=overwrite)
    if conflict is not None:
        raise conflict
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
    existing = run.outputs()  # again, now that the folder is ours (a run may have ended in it meanwhile)
    if existing and not overwrite:
        raise LpsctlError(_holds_a_run(run.path, existing))
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


def _start_heartbeat(lock: Path) -> threading.Event:
    """Touch `lock` every LOCK_HEARTBEAT_S from a daemon thread until the returned event is set (or the process
    dies, which is the point: a lock from another host is judged by its age)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(LOCK_HEARTBEAT_S):
            try:
                os.utime(lock)
            except OSError:
                return

    threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True).start()
    return stop


def _holds_a_run(path: Path, existing: list[Path]) -> str:
    return (
        f"run folder {path} already holds a run ({', '.join(p.name for p in existing)}): pass --resume to continue "
        "it or --overwrite to start again"
    )


def _in_use(path: Path, pid: int, host: str) -> str:
    return (
        f"run folder {path} is in use by process {pid} on {host}: wait for it to end or stop it (another run needs "
        f"another --out; if that process is gone, delete {path / LOCK_NAME})"
    )


def _lock_holder(lock: Path) -> tuple[int | None, str]:
    """(pid, host) written in a lock file; (None, "") when it is unreadable or still being written."""
    try:
        pid, host = lock.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def _running(pid: int, host: str) -> bool:
    """Whether process `pid` runs on this host (for another host: see `RunDir.holder`)."""
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
