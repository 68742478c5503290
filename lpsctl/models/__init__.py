"""Networks: EfficientNet backbone with iABN, 2-way FPN, semantic head, SOLOv2 head, and the composed PanopticNet."""

from lpsctl.models.panoptic import PanopticNet, build_model, instance_geometry

__all__ = ["PanopticNet", "build_model", "instance_geometry"]
