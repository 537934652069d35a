"""Field -> found cells -> crops, and predictions -> the differential's JSON shape.

Pure Python (no Django): the portal's processing task and the ``differential`` command call the
same functions, so a field gives the same cells, boxes and classes either way.
"""
from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image

from .detection import crop_cell, detect_in_large_field, detect_white_cells, to_rgb_array
from .detection.scale import FieldScale, field_scale
from .stats import differential

CROP_MARGIN = 0.15
# Fields larger than this (either side, px) are processed in overlapping tiles.
TILE_ABOVE = 1600
TILE, TILE_OVERLAP = 1024, 256
NON_LEUKOCYTE_KINDS = ("smudge", "artefact")  # detector kinds that are their own class


@dataclass
class FoundCell:
    box: tuple[int, int, int, int]  # field pixel coordinates (x0, y0, x1, y1)
    score: float
    kind: str  # wbc / smudge / artefact
    crop: Image.Image

    @property
    def needs_model(self) -> bool:
        return self.kind not in NON_LEUKOCYTE_KINDS


@dataclass
class FieldCells:
    cells: list[FoundCell]
    scale: FieldScale  # the field's scale and where it comes from (red cells, a setting, the default)


def find_cells(image, *, microns_per_pixel: float | None = None, margin: float = CROP_MARGIN) -> FieldCells:
    """Every white cell of a field (tiles for large fields, a cell on a tile border once), in
    reading order (top to bottom, left to right), each with its crop. The detector's sizes follow
    the field's scale: ``microns_per_pixel`` when given, else measured on the field's red cells."""
    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    scale = field_scale(rgb, microns_per_pixel=microns_per_pixel)
    params = scale.params()
    if max(h, w) > TILE_ABOVE:
        # A tile's overlap must hold a whole nucleus, whatever the magnification.
        overlap = max(TILE_OVERLAP, int(1.3 * params.cell_diameter_px))
        dets = detect_in_large_field(rgb, tile=max(TILE, 4 * overlap), overlap=overlap, params=params)
    else:
        dets = detect_white_cells(rgb, params=params)
    dets = sorted(dets, key=lambda d: (d.box[1], d.box[0], d.box[3], d.box[2]))
    cells = [
        FoundCell(box=tuple(int(v) for v in d.box), score=float(d.score), kind=d.kind,
                  crop=crop_cell(rgb, d.box, margin=margin))
        for d in dets
    ]
    return FieldCells(cells=cells, scale=scale)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def as_stored(image: Image.Image) -> Image.Image:
    """The crop as the portal stores and reads it back (lossless PNG, RGB)."""
    return Image.open(io.BytesIO(png_bytes(image))).convert("RGB")


def cell_record(*, field: str, box: Sequence[int] | None, label: str, confidence: float, agreement: int,
                n_backbones: int) -> dict:
    return {
        "field": field,
        "box": [int(v) for v in box] if box is not None else None,
        "class": label,
        "confidence": round(float(confidence), 4),
        "agreement": f"{int(agreement)}/{int(n_backbones)}",
    }


def differential_json(cells: Iterable[dict], *, leukocyte_codes: Iterable[str], method: str = "wilson") -> dict:
    """The machine-readable result: ``{"cells": [...], "counts": {...}, "percentages": {...},
    "intervals": {...}}`` (percentages and intervals over the leukocyte classes)."""
    cells = list(cells)
    counts = Counter(c["class"] for c in cells)
    diff = differential(counts, leukocyte_codes=leukocyte_codes, method=method)
    return {
        "cells": cells,
        "counts": dict(sorted(counts.items())),
        "percentages": dict(sorted(diff.percentages.items())),
        "intervals": dict(sorted(diff.intervals.items())),
    }
