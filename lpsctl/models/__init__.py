"""Networks: EfficientNet backbone with iABN, 2-way FPN, semantic head, SOLOv2 head, and the composed PanopticNet."""

from __future__ import annotations

from typing import Any

__all__ = ["PanopticNet", "PanopticOutputs", "Prediction", "build_model"]


def __getattr__(name: str) -> Any:
    # lazy, so that importing one part (e.g. lpsctl.models.norm) does not build the whole import graph
    if name in __all__:
        from lpsctl.models import panoptic

        return getattr(panoptic, name)
    raise AttributeError(name)
