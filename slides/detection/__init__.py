"""LeukoPortal white-cell detector (pure Python: numpy / scipy / scikit-image).

No Django imports here; the Django app in ``slides`` calls into this package.
"""
from .core import (
    KINDS,
    Detection,
    DetectionParams,
    crop_cell,
    detect_white_cells,
    to_rgb_array,
)
from .tiling import detect_in_large_field, nms
from .metrics import iou, match

__all__ = [
    "KINDS",
    "Detection",
    "DetectionParams",
    "crop_cell",
    "detect_white_cells",
    "detect_in_large_field",
    "nms",
    "iou",
    "match",
    "to_rgb_array",
]
