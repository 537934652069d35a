"""The scale of a smear field (micrometres per pixel), measured on its red cells.

A normal red cell is about 7.5 um across whatever the camera or objective, so the typical
red-cell diameter in pixels gives the field's scale, and the scale gives the size in pixels
the white-cell detector must expect.  Pure numpy / scipy; no Django.

How the red-cell diameter is measured (``red_cell_diameter``):

1. The field is reduced so its longer side is ``WORK_SIDE`` px (the measurement does not
   depend on the input's resolution); red cells are the stained, not purple pixels (the
   detector's colour normalisation; Otsu between background and red cells), holes (central
   pallor) filled.
2. The *local thickness* of that mask: for each pixel, the diameter of the largest disc inside
   the mask that covers it.  Touching and overlapping red cells keep their own thickness
   (the discs do not grow across the narrow necks between cells), unlike connected-component
   sizes.  The median over the red-cell pixels, found by bisection on the disc radius, is the
   typical thickness.
3. Thickness is the width of a cell (its inscribed disc); red cells in smears are slightly
   oval, so a constant factor (``THICKNESS_TO_DIAMETER``, measured against the annotated
   red-cell boxes of the benchmark's tune split) turns it into a diameter.
4. Very large fields (a reduced red cell under ``MIN_WORK_DIAMETER`` px) are measured again,
   reduced so that a red cell is about ``CROP_WORK_DIAMETER`` px (the central part of the field
   when that would exceed ``MAX_WORK_PIXELS``).

Fewer than ``MIN_RED_CELL_AREA`` red-cell areas measured: no estimate (``None``); the caller
says so and uses a setting or the detector's default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .core import DetectionParams, ImageLike, _otsu, _resize_rgb, background_rgb, optical_density, to_rgb_array

RED_CELL_DIAMETER_UM = 7.5
# Measured on the tune split of bccd-dev (benchmarks/detection.py --calibrate): annotated red-cell
# box size / median local thickness of the red-cell mask.
THICKNESS_TO_DIAMETER = 1.27
# The leukocyte size (um) the detector's parameters are written for: the size whose detector
# scores the best F1 on the tune split, each field at its measured scale (close to its historical
# default of 200 px at the tune split's median scale, 14.35 um; benchmarks/detection.py --calibrate).
DETECTOR_CELL_DIAMETER_UM = 14.9
DEFAULT_CELL_DIAMETER_PX = DetectionParams().cell_diameter_px
DEFAULT_MICRONS_PER_PIXEL = DETECTOR_CELL_DIAMETER_UM / DEFAULT_CELL_DIAMETER_PX

WORK_SIDE = 256
MIN_WORK_DIAMETER = 24.0  # reduced red cells smaller than this are measured again, less reduced
CROP_WORK_DIAMETER = 40.0  # ...reduced so a red cell is about this many px
MAX_WORK_PIXELS = 1_500_000  # ...on at most this many pixels (the field's central part)
MIN_RED_CELL_AREA = 3.0  # in red-cell discs: less red-cell area than this gives no estimate
# Sane bounds (um per px) for a light-microscope field; a setting outside them is refused.
MIN_MICRONS_PER_PIXEL, MAX_MICRONS_PER_PIXEL = 0.01, 2.0


@dataclass(frozen=True)
class FieldScale:
    """How big a pixel of one field is, and where that figure comes from."""

    microns_per_pixel: float
    source: str  # "red cells" (measured), "setting" (given), "default" (nothing measured)
    red_cell_diameter_px: float | None = None

    @property
    def cell_diameter_px(self) -> float:
        return DETECTOR_CELL_DIAMETER_UM / self.microns_per_pixel

    def params(self, base: DetectionParams | None = None) -> DetectionParams:
        return (base or DetectionParams()).with_(cell_diameter_px=self.cell_diameter_px)

    def as_dict(self) -> dict:
        return {"microns_per_pixel": round(self.microns_per_pixel, 5), "source": self.source,
                "red_cell_diameter_px": None if self.red_cell_diameter_px is None
                else round(self.red_cell_diameter_px, 1)}


def _red_cell_mask(rgb: np.ndarray) -> np.ndarray:
    bg = background_rgb(rgb)
    od = optical_density(rgb, bg)
    stain = ndi.gaussian_filter(od[..., 0] - od[..., 2], 1.0)
    total = ndi.gaussian_filter(od.sum(axis=2), 1.0)
    not_purple = stain < 0.04  # nuclei, platelets and white-cell cytoplasm are purple / blue
    values = total[not_purple]
    if values.size < 64:
        return np.zeros(total.shape, bool)
    threshold = _otsu(values[:: max(1, values.size // 100_000)])
    mask = not_purple & (total > max(threshold, 0.03))
    return ndi.binary_fill_holes(mask)


def _median_thickness(mask: np.ndarray) -> float | None:
    """Median local thickness (diameter, px) of the mask's pixels, by bisection on the radius."""
    n = int(mask.sum())
    if n == 0:
        return None
    dist = ndi.distance_transform_edt(mask)

    def covered(r: float) -> float:  # fraction of mask pixels inside some disc of radius r in the mask
        core = dist >= r
        if not core.any():
            return 0.0
        reach = ndi.distance_transform_edt(~core) <= r
        return float((reach & mask).sum()) / n

    lo, hi = 1.0, float(dist.max())
    if hi <= lo or covered(lo) < 0.5:
        return None
    for _ in range(9):  # the radius to about 1 %
        mid = math.sqrt(lo * hi)
        if covered(mid) >= 0.5:
            lo = mid
        else:
            hi = mid
    return 2.0 * math.sqrt(lo * hi)


def _measure(rgb: np.ndarray) -> tuple[float | None, float]:
    """(diameter in the given array's px or None, red-cell area in discs of that diameter)."""
    mask = _red_cell_mask(rgb)
    thickness = _median_thickness(mask)
    if thickness is None:
        return None, 0.0
    diameter = THICKNESS_TO_DIAMETER * thickness
    discs = float(mask.sum()) / (math.pi * diameter * diameter / 4)
    return diameter, discs


def red_cell_diameter(image: ImageLike) -> float | None:
    """Typical red-cell diameter in the field's pixels, or None when too few red cells show."""
    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    diameter, discs = _measure(_resize_rgb(rgb, scale))
    if diameter is not None and diameter < MIN_WORK_DIAMETER and scale < 1.0:
        # Red cells too small at this reduction (a very large field): measured again, less reduced,
        # on the whole field or, past MAX_WORK_PIXELS, on its central part.
        scale = min(1.0, CROP_WORK_DIAMETER * scale / diameter)
        side = math.sqrt(MAX_WORK_PIXELS) / scale
        ch, cw = int(min(h, side)), int(min(w, side))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        diameter, discs = _measure(_resize_rgb(rgb[y0:y0 + ch, x0:x0 + cw], scale))
    if diameter is None or discs < MIN_RED_CELL_AREA:
        return None
    return diameter / scale


def field_scale(image: ImageLike | None = None, *, microns_per_pixel: float | None = None) -> FieldScale:
    """The scale to detect with: the given setting, else the red cells' estimate, else the
    detector's default (``source`` says which)."""
    if microns_per_pixel is not None:
        if not MIN_MICRONS_PER_PIXEL <= microns_per_pixel <= MAX_MICRONS_PER_PIXEL:
            raise ValueError(f"microns per pixel must be within {MIN_MICRONS_PER_PIXEL}–{MAX_MICRONS_PER_PIXEL}")
        return FieldScale(microns_per_pixel=float(microns_per_pixel), source="setting")
    diameter = red_cell_diameter(image) if image is not None else None
    if diameter is None:
        return FieldScale(microns_per_pixel=DEFAULT_MICRONS_PER_PIXEL, source="default")
    return FieldScale(microns_per_pixel=RED_CELL_DIAMETER_UM / diameter, source="red cells",
                      red_cell_diameter_px=diameter)
