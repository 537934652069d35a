"""Writes of the platelet estimate: find platelets and red cells in a slide's fields (after the
white cells), let a reviewer correct a field's platelet count, and the lab's settings.

The numbers are computed by ``stats`` (pure), the detector is ``slides.detection.platelets`` (pure);
the reads are in ``selectors``.
"""
from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from PIL import Image

from annotations.audit import audit_record
from annotations.models import AuditAction, LabSettings
from annotations.services import lab_settings_change

from ..detection import scale as detection_scale
from ..detection.platelets import find_platelets_and_red_cells
from ..exceptions import SlideLocked, check_editable
from ..models import Slide, SlideField
from . import calibration, selectors

MAX_PLATELETS_PER_FIELD = 10_000


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
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=field.slide_id)
        check_editable(slide)  # signed, or submitted and awaiting release
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


def platelet_settings_update(*, actor, enabled: bool) -> LabSettings:
    """Turn the platelet estimate on or off (lab admins); audited. Turning it on is refused while
    the lab's factor is not calibrated (``platelet_calibration_save``): the one rule the page and the
    API both meet."""
    def values(lab: LabSettings) -> dict:
        if enabled and lab.platelet_calibration() is None:
            raise ValidationError({"platelet_estimate": ENABLE_REFUSED})
        return {"platelet_estimate": bool(enabled)}

    lab, _ = lab_settings_change(actor=actor, action=AuditAction.SETTINGS_PLATELETS, after=values)
    return lab


ENABLE_REFUSED = ("The platelet estimate cannot be turned on before the factor is calibrated for this lab's camera "
                  f"field: enter the analyser's platelet counts and the slides' mean platelets per field for at least "
                  f"{calibration.MIN_PAIRS} slides, and save the calibration.")


def platelet_calibration_save(*, actor, pairs: Sequence[tuple[float, float | str, str]]) -> LabSettings:
    """Calibrate the lab's platelet factor from ``pairs`` (analyser count in 10^9/L; mean platelets
    per field, or the accession code of a signed slide of fields whose mean is read; a label for
    messages) and store it with its 95% interval, the number of slides, the pairs, the date and the
    user (lab admins); audited. Refused, with nothing stored, when the pairs cannot calibrate it."""
    resolved = selectors.platelet_calibration_pairs(pairs=pairs)
    result = selectors.platelet_calibration_compute(pairs=resolved)
    lab, _ = lab_settings_change(actor=actor, action=AuditAction.SETTINGS_PLATELETS, after=lambda lab: {
        "platelet_factor": result.factor, "platelet_factor_low": result.low, "platelet_factor_high": result.high,
        "platelet_factor_se": result.se, "platelet_calibration_n": result.n,
        "platelet_calibration_pairs": [{"analyser_count": p.count, "per_field": p.per_field, "source": p.label}
                                       for p in resolved],
        "platelet_calibrated_at": timezone.now(), "platelet_calibrated_by_id": actor.pk})
    return lab
