"""Platelets and red cells in a stained smear field (pure numpy / scipy / scikit-image; no Django,
no trained weights).

A classical method, for the same reasons as the white-cell detector: it needs no training data the
lab does not have, it follows the field's scale, and every step can be read and checked.

Platelets (``detect_platelets``)
    Platelets are small purple objects (2-3 um), stained like a nucleus but far smaller.

    1. Colour normalisation and the stain map ``OD_red - OD_blue`` exactly as the white-cell
       detector (``core.stain_map``); lightly smoothed at a working resolution where a red cell is
       about ``work_rbc_diameter`` px.
    2. Threshold: per-field Otsu over the purple candidates, clamped to a window (a field without
       platelets must not get a threshold that picks red-cell texture).
    3. Connected components; those inside a white cell (its nucleus and granules) are dropped.
    4. Size rules in units of a platelet's area at the field's scale: too small = speck; one to
       ``clump_area`` platelets = a platelet (possibly two touching ones, counted by area); larger
       and still not a nucleus = a clump, counted as its area in platelets and flagged.
    5. Box: the component's box grown to at least the annotated platelet size (a platelet box
       holds the pale halo round the granulomere).

Red cells (``count_red_cells``)
    Red cells touch and overlap, so they are counted, not only boxed:

    1. The red-cell mask of ``scale`` (stained, not purple pixels; holes -- central pallor --
       filled), white cells removed.
    2. A distance transform of the mask; its maxima at least ``peak_distance`` of a red-cell
       diameter apart seed a watershed: each basin is one cell (touching cells split at their
       neck).  Basins smaller than ``min_cell_area`` of a red-cell disc are fragments (merged away).
    3. The count is the number of basins, each with its box; a basin much larger than one cell
       (a stack of overlapping cells without a neck) adds its area in cells (``area_count``).
       Cells cut by the field border count when their centre is in the field (they are in the
       mask), like the annotation does.

All sizes follow ``red_cell_diameter_px`` (from ``scale.field_scale``); the default is BCCD-like.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

from .core import ImageLike, _disk, _otsu, _resize_rgb, background_rgb, optical_density, to_rgb_array

# At BCCD's scale (a white cell ~200 px, a red cell ~95 px across): the default red-cell size.
DEFAULT_RED_CELL_DIAMETER_PX = 95.0


@dataclass(frozen=True)
class PlateletParams:
    """Sizes relative to the red-cell diameter (``red_cell_diameter_px`` in field pixels)."""

    red_cell_diameter_px: float = DEFAULT_RED_CELL_DIAMETER_PX
    work_rbc_diameter: float = 48.0  # working resolution: a red cell is this many px
    smooth_sigma: float = 0.7  # working px
    # Stain threshold (OD_red - OD_blue): Otsu over candidates above the floor, clamped to the window.
    stain_floor: float = 0.03
    threshold_min: float = 0.05
    threshold_max: float = 0.06
    # Hysteresis: a component of the mask is kept when its peak stain reaches this (absolute).
    seed_stain: float = 0.08
    # A platelet's stained area, as a fraction of a red-cell disc; below min_area of it: a speck.
    platelet_area: float = 0.045
    min_area: float = 0.4
    # Above clump_area platelets an object is a clump (counted by area, flagged); above
    # nucleus_area a white-cell nucleus (not a platelet at all).
    clump_area: float = 4.0
    nucleus_area: float = 0.35  # fraction of a red-cell disc
    # Box: at least this size (fraction of the red-cell diameter), centred on the object.
    min_box: float = 0.35
    box_grow: float = 1.4  # the stained box grown by this factor (halo)
    # Objects whose centre is inside one of these boxes (the white cells) are not platelets.
    exclude_margin: float = 0.0

    def with_(self, **kw) -> "PlateletParams":
        return replace(self, **kw)


@dataclass(frozen=True)
class RedCellParams:
    red_cell_diameter_px: float = DEFAULT_RED_CELL_DIAMETER_PX
    work_rbc_diameter: float = 24.0
    peak_distance: float = 0.40  # fraction of the diameter between two cell centres
    peak_height: float = 0.18  # a centre is at least this (fraction of the diameter) inside the mask
    min_cell_area: float = 0.25  # fraction of a red-cell disc; smaller basins are fragments
    stack_area: float = 1.8  # a basin above this many discs counts as its area in cells
    otsu_fraction: float = 1.0  # the red-cell mask's level, as a fraction of Otsu's

    def with_(self, **kw) -> "RedCellParams":
        return replace(self, **kw)


@dataclass
class Platelet:
    box: tuple[int, int, int, int]
    score: float
    count: int = 1  # how many platelets it stands for (a clump or two touching: more than one)
    clump: bool = False
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def kind(self) -> str:
        return "platelet_clump" if self.clump else "platelet"


@dataclass
class RedCells:
    count: int
    boxes: list[tuple[int, int, int, int]]
    area_count: float  # red-cell mask area / one red cell's area (a cross-check)


def _inside_any(x: float, y: float, boxes) -> bool:
    return any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in boxes)


def _work(rgb: np.ndarray, red_cell_diameter_px: float, work_diameter: float):
    scale = min(1.0, work_diameter / float(red_cell_diameter_px))
    small = _resize_rgb(rgb, scale)
    return small, scale


def platelet_threshold(stain: np.ndarray, p: PlateletParams) -> float:
    v = stain[stain > p.stain_floor]
    if v.size < 16:
        return float(p.threshold_max)
    return float(np.clip(_otsu(v[:: max(1, v.size // 100_000)]), p.threshold_min, p.threshold_max))


def detect_platelets(image: ImageLike, *, params: PlateletParams | None = None, exclude=(),
                     threshold: float | None = None) -> list[Platelet]:
    """Platelets (and clumps) of one field, in reading order.  ``exclude``: boxes (the field's
    white cells) whose purple content is not platelets.  ``threshold`` fixes the stain threshold
    (the benchmark's fixed baseline); by default it is the field's own."""
    p = params or PlateletParams()
    rgb = to_rgb_array(image)
    H, W = rgb.shape[:2]
    if min(H, W) < 8:
        return []
    bg = background_rgb(rgb)
    small, scale = _work(rgb, p.red_cell_diameter_px, p.work_rbc_diameter)
    od = optical_density(small, bg)
    stain = od[..., 0] - od[..., 2]
    if p.smooth_sigma > 0:
        stain = ndi.gaussian_filter(stain, p.smooth_sigma)
    thr = platelet_threshold(stain, p) if threshold is None else float(threshold)
    mask = stain > thr
    labels, n = ndi.label(mask)
    if n and p.seed_stain > thr:
        peak = ndi.maximum(stain, labels, index=np.arange(1, n + 1))
        keep = np.concatenate([[False], np.asarray(peak) >= p.seed_stain])
        labels = np.where(keep[labels], labels, 0)
    if n == 0:
        return []
    D = p.red_cell_diameter_px * scale
    disc = math.pi * D * D / 4
    one = p.platelet_area * disc
    ex = [tuple(v * scale for v in b) for b in exclude]
    out: list[Platelet] = []
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == lab
        area = float(comp.sum())
        if area < p.min_area * one or area > p.nucleus_area * disc:
            continue
        ys, xs = np.nonzero(comp)
        cy, cx = ys.mean() + sl[0].start, xs.mean() + sl[1].start
        if ex and _inside_any(cx, cy, ex):
            continue
        clump = area > p.clump_area * one
        count = max(1, int(round(area / one))) if area > 1.6 * one else 1
        vals = stain[sl][comp]
        contrast = float(np.percentile(vals, 90)) / max(thr, 1e-6)
        score = float(1 / (1 + math.exp(-(contrast - 1.3) / 0.2)))
        # Box in field px: the stained extent grown for the halo, at least min_box.
        bw = max((xs.max() + 1 - xs.min()) * p.box_grow, p.min_box * D)
        bh = max((ys.max() + 1 - ys.min()) * p.box_grow, p.min_box * D)
        mx, my = (xs.min() + xs.max() + 1) / 2 + sl[1].start, (ys.min() + ys.max() + 1) / 2 + sl[0].start
        box = (max(0, int(round((mx - bw / 2) / scale))), max(0, int(round((my - bh / 2) / scale))),
               min(W, int(round((mx + bw / 2) / scale))), min(H, int(round((my + bh / 2) / scale))))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        out.append(Platelet(box=box, score=round(score, 4), count=count, clump=clump,
                            extra={"area_platelets": round(area / one, 2), "threshold": round(thr, 4)}))
    out.sort(key=lambda d: (d.box[1], d.box[0]))
    return out


def red_cell_mask(rgb: np.ndarray, *, otsu_fraction: float = 1.0, level: float | None = None) -> np.ndarray:
    """Stained, not purple pixels, holes (central pallor) filled: the scale module's red-cell mask,
    with its Otsu level (background / red cells, on the total optical density) scaled by
    ``otsu_fraction`` (pale red cells lie below Otsu's level); ``level`` fixes it instead."""
    bg = background_rgb(rgb)
    od = optical_density(rgb, bg)
    stain = ndi.gaussian_filter(od[..., 0] - od[..., 2], 1.0)
    total = ndi.gaussian_filter(od.sum(axis=2), 1.0)
    not_purple = stain < 0.04
    values = total[not_purple]
    if values.size < 64:
        return np.zeros(total.shape, bool)
    if level is not None:
        threshold = float(level)
    else:
        threshold = _otsu(values[:: max(1, values.size // 100_000)]) * otsu_fraction
    return ndi.binary_fill_holes(not_purple & (total > max(threshold, 0.03)))


def count_red_cells(image: ImageLike, *, params: RedCellParams | None = None, exclude=(),
                    level: float | None = None, split: bool = True) -> RedCells:
    """Red cells of one field: a distance-transform watershed of the red-cell mask (``exclude``:
    white-cell boxes, left out).  The benchmark's baseline fixes the mask's ``level`` and counts
    connected components (``split=False``)."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    p = params or RedCellParams()
    rgb = to_rgb_array(image)
    H, W = rgb.shape[:2]
    if min(H, W) < 8:
        return RedCells(count=0, boxes=[], area_count=0.0)
    small, scale = _work(rgb, p.red_cell_diameter_px, p.work_rbc_diameter)
    h, w = small.shape[:2]
    mask = red_cell_mask(small, otsu_fraction=p.otsu_fraction, level=level)
    for b in exclude:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in b)
        mask[max(0, y0):y1, max(0, x0):x1] = False
    D = p.red_cell_diameter_px * scale
    disc = math.pi * D * D / 4
    mask = ndi.binary_opening(mask, structure=_disk(max(1.0, 0.08 * D)))
    if not mask.any():
        return RedCells(count=0, boxes=[], area_count=0.0)
    # Distance to the background; the field border is not background (cut cells keep their depth).
    dist = ndi.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1]
    dist = ndi.gaussian_filter(dist, 0.5)
    peaks = peak_local_max(dist, min_distance=max(1, int(p.peak_distance * D)),
                           threshold_abs=p.peak_height * D / 2, labels=ndi.label(mask)[0], exclude_border=False)
    if split:
        markers = np.zeros(mask.shape, np.int32)
        for i, (y, x) in enumerate(peaks, start=1):
            markers[y, x] = i
        basins = watershed(-dist, markers, mask=mask)
    else:
        basins = ndi.label(mask)[0]
    count = 0
    boxes = []
    for lab, sl in enumerate(ndi.find_objects(basins), start=1):
        if sl is None:
            continue
        area = float((basins[sl] == lab).sum())
        if area < p.min_cell_area * disc:
            continue
        n = int(round(area / disc)) if area > p.stack_area * disc else 1
        count += max(1, n)
        boxes.append((int(sl[1].start / scale), int(sl[0].start / scale),
                      min(W, int(math.ceil(sl[1].stop / scale))), min(H, int(math.ceil(sl[0].stop / scale)))))
    return RedCells(count=count, boxes=boxes, area_count=round(float(mask.sum()) / disc, 2))


@dataclass
class FieldFindings:
    """Platelets and red cells of one field, as the portal stores them."""

    platelets: list[Platelet]
    red_cells: RedCells
    red_cell_diameter_px: float

    @property
    def platelet_count(self) -> int:
        return sum(p.count for p in self.platelets)

    @property
    def clumps(self) -> int:
        return sum(1 for p in self.platelets if p.clump)

    def as_dict(self) -> dict:
        return {
            "platelet_count": self.platelet_count,
            "platelet_clumps": self.clumps,
            "platelet_boxes": [[*p.box, p.count, int(p.clump)] for p in self.platelets],
            "red_cell_count": self.red_cells.count,
            "red_cell_boxes": [list(b) for b in self.red_cells.boxes],
        }


def find_platelets_and_red_cells(image: ImageLike, *, red_cell_diameter_px: float | None = None,
                                 white_cell_boxes=()) -> FieldFindings:
    """Both counts of one field at its scale (``red_cell_diameter_px``, e.g. from
    ``scale.field_scale``; the BCCD-like default when unknown); the white cells' boxes are left out."""
    rgb = to_rgb_array(image)
    d = float(red_cell_diameter_px or DEFAULT_RED_CELL_DIAMETER_PX)
    boxes = [tuple(b) for b in white_cell_boxes]
    return FieldFindings(
        platelets=detect_platelets(rgb, params=PlateletParams(red_cell_diameter_px=d), exclude=boxes),
        red_cells=count_red_cells(rgb, params=RedCellParams(red_cell_diameter_px=d), exclude=boxes),
        red_cell_diameter_px=d,
    )
