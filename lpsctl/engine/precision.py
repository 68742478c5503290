"""Mixed precision, one rule for training and inference: fp16 autocast on CUDA only (CPU fp16 kernels are slow or
missing, so there it runs fp32), bf16 autocast on CUDA and CPU, "off" fp32."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from lpsctl.config import Precision


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `precision` on `device`, or None for fp32."""
    if precision == "fp16" and device.type == "cuda":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return None


def autocast(precision: Precision, device: torch.device) -> AbstractContextManager:
    """A context that runs the forward pass in `precision` on `device`."""
    dtype = autocast_dtype(precision, device)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
