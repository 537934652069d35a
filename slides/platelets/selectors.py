"""Reads of the platelet estimate: the slide's estimate and red-cell figures, and its fields with
their boxes for the verification screen."""
from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError

from annotations.models import LabSettings

from ..models import ReferenceInterval, Slide, SlideCell
from . import calibration as platelet_calibration
from . import stats as platelet_stats


def platelet_rule() -> dict | None:
    rule = ReferenceInterval.objects.filter(active=True, measure=ReferenceInterval.Measure.PLATELETS).first()
    if rule is None:
        return None
    return {"name": rule.name, "low": rule.low, "high": rule.high, "flag_low": rule.flag_low,
            "flag_high": rule.flag_high}


def slide_platelets(*, slide: Slide, lab: LabSettings | None = None, flags_suppressed_reason: str | None = None,
                    insufficient: str | None = None) -> dict | None:
    """The slide's platelet estimate and red-cell figures, or None: the lab has not turned the
    estimate on (or its factor is not calibrated), the slide is of cropped cells, or no field has
    been looked at yet. ``flags_suppressed_reason`` (``slides.selectors.slide_flags_suppressed_reason``)
    and ``insufficient`` (``slides.stats.insufficient_message``): why no automatic flag may be raised
    on the slide; the platelet flag is withheld with the differential's. ``slides.selectors.
    slide_differential`` passes both: read the estimate there (``["platelets"]``), not here."""
    lab = lab or LabSettings.get()
    calibration = lab.platelet_calibration()
    if not lab.platelet_estimate or calibration is None or slide.kind != Slide.Kind.FIELDS:
        return None
    fields = list(slide.fields.filter(platelet_count__isnull=False).order_by("position", "id"))
    if not fields:
        return None
    white = SlideCell.objects.filter(field__in=fields, detector_kind="wbc").count()
    out = platelet_stats.summary(
        platelets_per_field=[f.platelets_reported for f in fields],
        red_cells_per_field=[f.red_cell_count or 0 for f in fields],
        white_cells=white, clumps=sum(f.platelet_clumps for f in fields), factor=lab.platelet_factor,
        rule=platelet_rule(), corrected_fields=sum(1 for f in fields if f.platelet_count_corrected is not None),
        calibration=calibration, flags_suppressed_reason=flags_suppressed_reason, insufficient=insufficient)
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


def slide_mean_platelets_per_field(*, code: str) -> float:
    """The mean platelets per field of the latest signed version of the slide of fields ``code``
    (the reviewer's corrections included), for a calibration pair; refused (ValidationError) when
    there is no such slide or it has no field looked at."""
    slide = Slide.objects.filter(code=code, status=Slide.Status.SIGNED).order_by("-version").first()
    if slide is None:
        raise ValidationError({"pairs": f"{code}: no signed slide with this accession code (sign it first, or "
                                        "give its mean platelets per field)."})
    if slide.kind != Slide.Kind.FIELDS:
        raise ValidationError({"pairs": f"{code}: a slide of cropped cells has no fields to count platelets in."})
    counts = [f.platelets_reported for f in slide.fields.filter(platelet_count__isnull=False)]
    if not counts:
        raise ValidationError({"pairs": f"{code}: no field of this slide has been looked at for platelets."})
    return sum(counts) / len(counts)


def platelet_calibration_parse(*, text: str) -> list[tuple[float, float | str, str]]:
    """The pairs typed on the settings page (``calibration.parse_pairs``), its refusal as a ValidationError."""
    try:
        return platelet_calibration.parse_pairs(text)
    except platelet_calibration.CalibrationError as exc:
        raise ValidationError({"pairs": str(exc)}) from None


def platelet_calibration_pairs(*, pairs: Sequence[tuple[float, float | str, str]]) -> list[platelet_calibration.Pair]:
    """The calibration's pairs with each accession code replaced by its slide's mean platelets per field."""
    out = []
    for count, second, label in pairs:
        if isinstance(second, str):
            per_field = slide_mean_platelets_per_field(code=second)
            label = f"{label} ({second})" if label else second
        else:
            per_field = second
        out.append(platelet_calibration.Pair(count=count, per_field=per_field, label=label))
    return out


def platelet_calibration_compute(*, pairs: Sequence[platelet_calibration.Pair]) -> platelet_calibration.Calibration:
    """The factor of ``pairs`` (pure ``calibration.calibrate``), its refusal as a ValidationError."""
    try:
        return platelet_calibration.calibrate(pairs)
    except platelet_calibration.CalibrationError as exc:
        raise ValidationError({"pairs": str(exc)}) from None
