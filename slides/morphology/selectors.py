"""Reads of the red-cell grades: the verification form's rows and the section frozen at signing."""
from __future__ import annotations

from . import catalogue, report
from .models import RedCellGrade


def slide_red_cell_grades(*, slide) -> list[dict]:
    """The slide's grades, as plain dicts (``report.frozen_section`` takes them)."""
    return [{"code": g.finding, "grade": g.grade, "percent": g.percent, "graded_by": g.graded_by.get_username(),
             "graded_at": g.graded_at.isoformat()}
            for g in RedCellGrade.objects.filter(slide=slide).select_related("graded_by")]


def slide_red_cells_section(*, slide) -> dict:
    """The red-cell section the signature freezes into ``Slide.report``."""
    return report.frozen_section(slide_red_cell_grades(slide=slide))


def slide_red_cell_form(*, slide) -> dict:
    """The verification screen's red-cell section: the findings by group, each with its grades and
    the current one; and the slide's field images to grade from."""
    current = {g["code"]: g for g in slide_red_cell_grades(slide=slide)}
    groups = []
    for key, title in catalogue.GROUPS.items():
        rows = []
        for f in catalogue.FINDINGS:
            if f.group != key:
                continue
            g = current.get(f.code) or {}
            rows.append({"code": f.code, "name": f.name, "scale": f.scale, "definition": f.definition,
                         "grades": [(value, catalogue.GRADE_TEXT[value]) for value in f.grades],
                         "grade": g.get("grade", ""), "percent": g.get("percent"),
                         "text": catalogue.grade_text(f.code, g["grade"], g.get("percent")) if g else "",
                         "graded_by": g.get("graded_by", "")})
        groups.append({"key": key, "title": title, "findings": rows})
    fields = list(slide.fields.select_related("image").order_by("position", "id"))
    return {"groups": groups, "graded": len(current), "fields": fields}
