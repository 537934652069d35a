"""Writes of the red-cell grades: a reviewer saves the verification form (every finding at once),
validated against the catalogue, audited, refused on a signed slide; a correction copies them."""
from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from annotations.audit import audit_record
from annotations.models import AuditAction
from leukoportal.roles import REVIEWER, has_role

from slides.exceptions import SlideLocked, check_editable  # noqa: F401 (SlideLocked: the refusal callers catch)
from slides.models import Slide

from . import catalogue
from .models import RedCellGrade


def slide_red_cells_grade(*, slide, actor, grades: Mapping[str, str], percents: Mapping[str, str] | None = None
                          ) -> list[RedCellGrade]:
    """Save the reviewer's red-cell grades of ``slide``: ``grades`` maps a finding's code to its
    grade ("" leaves it ungraded, withdrawing an earlier grade); ``percents`` maps a finding graded
    by percentage (schistocytes) to its percentage. Findings not named keep their grade. All or
    nothing: one invalid grade refuses the whole form (ValidationError, keyed by finding). Needs the
    reviewer role; refused on a signed slide or one awaiting release (SlideLocked). One audit event
    with the grades before and after, when anything changed. Returns the slide's grades."""
    if not has_role(actor, REVIEWER):
        raise PermissionDenied("Grading red-cell morphology needs the reviewer role.")
    percents = percents or {}
    unknown = sorted(c for c in {*grades, *percents} if c not in catalogue.BY_CODE)
    if unknown:
        raise ValidationError({"red_cells": f"Unknown red-cell finding(s): {', '.join(unknown)}."})
    wanted, errors = {}, {}
    for code in catalogue.BY_CODE:
        if code not in grades and code not in percents:
            continue
        try:
            wanted[code] = catalogue.validate(code, grade=grades.get(code, ""), percent=percents.get(code))
        except catalogue.GradeError as exc:
            errors[code] = str(exc)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        check_editable(slide)  # signed, or submitted and awaiting release
        existing = {g.finding: g for g in RedCellGrade.objects.select_for_update().filter(slide=slide)}
        before = {code: [g.grade, g.percent] for code, g in existing.items()}
        now = timezone.now()
        for code, value in wanted.items():
            current = existing.get(code)
            if value is None:
                if current is not None:
                    current.delete()
                continue
            grade, percent = value
            if current is not None and (current.grade, current.percent) == (grade, percent):
                continue
            RedCellGrade.objects.update_or_create(slide=slide, finding=code, defaults={
                "grade": grade, "percent": percent, "graded_by": actor, "graded_at": now})
        result = list(RedCellGrade.objects.filter(slide=slide))
        after = {g.finding: [g.grade, g.percent] for g in result}
        if after != before:
            audit_record(actor=actor, action=AuditAction.SLIDE_RED_CELLS_GRADE, target=slide,
                         before=before, after=after)
    return result


def red_cell_grades_copy(*, source, target) -> int:
    """A correction (a new version) starts from the signed version's grades, with who graded them."""
    rows = [RedCellGrade(slide=target, finding=g.finding, grade=g.grade, percent=g.percent, graded_by=g.graded_by,
                         graded_at=g.graded_at) for g in RedCellGrade.objects.filter(slide=source)]
    RedCellGrade.objects.bulk_create(rows)
    return len(rows)
