"""Reads of the platelet estimate: the slide's estimate and red-cell figures, and its fields with
their boxes for the verification screen."""
from __future__ import annotations

from annotations.models import LabSettings

from ..models import ReferenceInterval, Slide, SlideCell
from . import stats as platelet_stats


def platelet_rule() -> dict | None:
    rule = ReferenceInterval.objects.filter(active=True, measure=ReferenceInterval.Measure.PLATELETS).first()
    if rule is None:
        return None
    return {"name": rule.name, "low": rule.low, "high": rule.high, "flag_low": rule.flag_low,
            "flag_high": rule.flag_high}


def slide_platelets(*, slide: Slide, lab: LabSettings | None = None) -> dict | None:
    """The slide's platelet estimate and red-cell figures, or None: the lab has not turned the
    estimate on, the slide is of cropped cells, or no field has been looked at yet."""
    lab = lab or LabSettings.get()
    if not lab.platelet_estimate or slide.kind != Slide.Kind.FIELDS:
        return None
    fields = list(slide.fields.filter(platelet_count__isnull=False).order_by("position", "id"))
    if not fields:
        return None
    white = SlideCell.objects.filter(field__in=fields, detector_kind="wbc").count()
    out = platelet_stats.summary(
        platelets_per_field=[f.platelets_reported for f in fields],
        red_cells_per_field=[f.red_cell_count or 0 for f in fields],
        white_cells=white, clumps=sum(f.platelet_clumps for f in fields), factor=lab.platelet_factor,
        rule=platelet_rule(), corrected_fields=sum(1 for f in fields if f.platelet_count_corrected is not None))
    out["field_rows"] = [
        {"id": f.pk, "position": f.position, "detected": f.platelet_count, "corrected": f.platelet_count_corrected,
         "reported": f.platelets_reported, "clumps": f.platelet_clumps, "red_cells": f.red_cell_count}
        for f in fields]
    return out


def slide_platelet_fields(*, slide: Slide) -> list[dict]:
    """The fields for the verification screen's platelet section: the image, its size, the boxes
    (platelets and red cells) and the counts, in field order."""
    out = []
    for f in slide.fields.filter(platelet_count__isnull=False).select_related("image", "platelet_corrected_by"):
        out.append({
            "field": f, "width": f.image.width, "height": f.image.height,
            "platelet_boxes": [{"x": b[0], "y": b[1], "w": b[2] - b[0], "h": b[3] - b[1], "clump": bool(b[5])}
                               for b in f.platelet_boxes],
            "red_cell_boxes": [{"x": b[0], "y": b[1], "w": b[2] - b[0], "h": b[3] - b[1]} for b in f.red_cell_boxes],
        })
    return out
