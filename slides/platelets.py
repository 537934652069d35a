"""Platelets and red cells of a slide's fields: find them (after the white cells), let a reviewer
correct a field's platelet count, and read the slide's platelet estimate.

Writes (``*_detect``, ``*_correct``, ``*_update``) and the one read (``slide_platelets``) live here
together: they are the whole feature, kept out of the white-cell code. The numbers are computed by
``platelet_stats`` (pure) and the detector is ``detection.platelets`` (pure).
"""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from PIL import Image

from annotations.audit import audit_record
from annotations.models import AuditAction, LabSettings
from annotations.services import lab_settings_change

from . import platelet_stats
from .detection import scale as detection_scale
from .detection.platelets import find_platelets_and_red_cells
from .models import ReferenceInterval, Slide, SlideCell, SlideField

MAX_PLATELETS_PER_FIELD = 10_000
MAX_FACTOR = 1_000.0


def _red_cell_diameter_px(field: SlideField) -> float | None:
    mpp = (field.scale or {}).get("microns_per_pixel")
    return detection_scale.RED_CELL_DIAMETER_UM / float(mpp) if mpp else None


def field_platelets_find(field: SlideField):
    """Platelets and red cells of one detected field at the scale its white cells were found at,
    the white cells' boxes left out (pure work: reads the image and the field's cells)."""
    with default_storage.open(field.image.file.name, "rb") as handle:
        image = Image.open(handle)
        image.load()
    boxes = [c.box for c in field.cells.exclude(x0__isnull=True)]
    return find_platelets_and_red_cells(image, red_cell_diameter_px=_red_cell_diameter_px(field),
                                        white_cell_boxes=boxes)


def slide_platelets_detect(*, slide: Slide, progress=None) -> int:
    """Find platelets and red cells in every detected field that has not been looked at yet
    (idempotent: a second run does nothing). Returns how many fields were done."""
    fields = list(slide.fields.filter(detected=True, platelet_count__isnull=True).select_related("image"))
    for i, field in enumerate(fields):
        if progress is not None:
            progress(done=i, total=len(fields))
        result = field_platelets_find(field)
        data = result.as_dict()
        SlideField.objects.filter(pk=field.pk, platelet_count__isnull=True).update(
            platelet_count=data["platelet_count"], platelet_clumps=data["platelet_clumps"],
            platelet_boxes=data["platelet_boxes"], red_cell_count=data["red_cell_count"],
            red_cell_boxes=data["red_cell_boxes"])
    return len(fields)


def field_copy_values(field: SlideField) -> dict:
    """A field's platelet and red-cell columns, for the copy a corrected version makes."""
    return {name: getattr(field, name) for name in (
        "platelet_count", "platelet_clumps", "platelet_boxes", "platelet_count_corrected", "platelet_corrected_by",
        "platelet_corrected_at", "red_cell_count", "red_cell_boxes")}


def field_platelet_correct(*, field: SlideField, actor, count) -> SlideField:
    """The reviewer's platelet count of one field (``None`` or "" withdraws the correction); audited.
    Refused on a signed slide (correct it by a new version)."""
    if count in (None, ""):
        value = None
    else:
        try:
            value = int(count)
        except (TypeError, ValueError):
            raise ValidationError({"count": "The platelet count must be a whole number."}) from None
        if not 0 <= value <= MAX_PLATELETS_PER_FIELD:
            raise ValidationError({"count": f"The platelet count must be between 0 and {MAX_PLATELETS_PER_FIELD}."})
    from .services import SlideLocked, _check_editable

    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=field.slide_id)
        _check_editable(slide)  # signed, or submitted and awaiting release
        if slide.task_state in (Slide.TaskState.RUNNING, Slide.TaskState.QUEUED):
            raise SlideLocked("The slide is still being processed; wait for it to finish.")
        field = SlideField.objects.select_for_update().get(pk=field.pk)
        before = {"detected": field.platelet_count, "corrected": field.platelet_count_corrected}
        if value == field.platelet_count_corrected:
            return field
        field.platelet_count_corrected = value
        field.platelet_corrected_by = actor if value is not None else None
        field.platelet_corrected_at = timezone.now() if value is not None else None
        field.save(update_fields=["platelet_count_corrected", "platelet_corrected_by", "platelet_corrected_at"])
        audit_record(actor=actor, action=AuditAction.SLIDE_PLATELETS_CORRECT, target=field,
                     before=dict(before, slide=slide.pk), after={"detected": field.platelet_count, "corrected": value})
    return field


def platelet_settings_update(*, actor, enabled: bool, factor) -> LabSettings:
    """Turn the platelet estimate on or off and set the lab's factor (lab admins); audited."""
    try:
        factor = float(factor)
    except (TypeError, ValueError):
        raise ValidationError({"platelet_factor": "The factor must be a number."}) from None
    if not 0 < factor <= MAX_FACTOR:
        raise ValidationError({"platelet_factor": f"The factor must be above 0 and at most {MAX_FACTOR:g}."})
    lab, _ = lab_settings_change(actor=actor, action=AuditAction.SETTINGS_PLATELETS, after=lambda lab: {
        "platelet_estimate": bool(enabled), "platelet_factor": factor})
    return lab


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
