"""Checkpoints: atomic writes, `weights_only` loading (a stranger's file cannot run code), clear compatibility
errors."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lpsctl.atomic import atomic_path
from lpsctl.config import Config, from_dict
from lpsctl.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as temp:
        try:
            torch.save({"format_version": FORMAT_VERSION, **state}, temp)
        except RuntimeError:  # torch's C++ writer reports a full disk as e.g. "unexpected pos … vs …"
            raise CheckpointError(
                f"cannot write checkpoint {path}: the write failed after {_size(temp) / 2**20:.1f} MB with "
                f"{shutil.disk_usage(temp.parent).free / 2**20:.0f} MB free on its disk (full disk, quota or file-size "
                "limit?); the previous checkpoint is kept"
            ) from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a checkpoint with `torch.load(weights_only=True)`; a clear CheckpointError for every failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (train one with `lpsctl train eps|solo --out DIR`)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" on files that are not checkpoints
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler raises many kinds (IndexError, KeyError…) on garbage
        text = str(error).strip()
        if "weights only load failed" in text.lower():
            # torch's message goes on to suggest weights_only=False, which would let the file run code: never
            reason = "it holds Python objects besides tensors and plain data, which lpsctl never unpickles"
        else:
            reason = text.splitlines()[0] if text else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: not a valid lpsctl checkpoint ({reason})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not an lpsctl checkpoint (no model weights and config inside)")
    version = state.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, newer than this lpsctl reads ({FORMAT_VERSION}): upgrade lpsctl"
        )
    return state


def checkpoint_config(state: dict[str, Any], path: Path | str) -> Config:
    """The resolved config stored inside a checkpoint."""
    try:
        return from_dict(state["config"])
    except ConfigError as error:
        raise CheckpointError(f"{path}: stored config does not fit this lpsctl version ({error})") from None


def load_model_state(model: nn.Module, state_dict: dict[str, Any], source: Path | str) -> None:
    """Load weights strictly; a mismatch names the instance heads when they differ, else the missing, unexpected and
    wrongly shaped keys."""
    own = model.state_dict()
    stored_head, own_head = _instance_head_of(state_dict), _instance_head_of(own)
    if stored_head != own_head:
        raise CheckpointError(
            f"{source} holds the weights of a model with {stored_head}, but its config describes one with {own_head}: "
            "the checkpoint was edited or mixed up with another run's; use the checkpoint its run wrote"
        )
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in set(own) & set(state_dict)
        if tuple(own[key].shape) != tuple(state_dict[key].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" … ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError(
            f"{source} does not fit this model ({'; '.join(parts)}). It was trained with another config: "
            "use the checkpoint's own config (omit --config/--set) or a matching checkpoint"
        )
    model.load_state_dict(state_dict)


def _instance_head_of(state_dict: dict[str, Any]) -> str:
    """Which instance head a model's weights belong to, by the parameter names each head has."""
    if any(key.startswith("instance_head.rpn.") for key in state_dict):
        return "a Mask R-CNN instance head"
    if any(key.startswith("instance_head.") for key in state_dict):
        return "a SOLOv2 instance head"
    return "no instance head"
