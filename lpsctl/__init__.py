"""lpsctl: location-based panoptic segmentation (EfficientPS with a SOLOv2 instance head)."""

__version__ = "0.1.0"
