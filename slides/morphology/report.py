"""The red-cell section of a signed report (``Slide.report["red_cell_morphology"]``) and its lines for the
report page, the PDF and the CSV (pure Python, no Django).

A report signed since the grading exists always carries the section: the graded findings in the
catalogue's order, or none ("No red-cell findings graded." is printed, explicitly). A report
signed before carries no section and prints nothing about red cells.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import catalogue

KEY = "red_cell_morphology"


def frozen_section(grades: Iterable[Mapping]) -> dict:
    """The section frozen at signing from the slide's grades (each ``{"code", "grade", "percent",
    "graded_by", "graded_at"}``); findings unknown to the catalogue are left out."""
    by_code = {g["code"]: g for g in grades}
    findings = []
    for finding in catalogue.FINDINGS:
        g = by_code.get(finding.code)
        if g is None:
            continue
        system, code, display = finding.coding
        findings.append({
            "code": finding.code, "name": finding.name, "group": finding.group, "grade": g["grade"],
            "percent": g.get("percent"), "text": catalogue.grade_text(finding.code, g["grade"], g.get("percent")),
            "definition": finding.definition, "system": system, "system_code": code, "display": display,
            "graded_by": g.get("graded_by") or "", "graded_at": g.get("graded_at") or "",
        })
    return {"findings": findings, "method": catalogue.METHOD}


def section(report: Mapping) -> dict | None:
    """The report's red-cell section, or None for a report signed before it existed."""
    return report.get(KEY)


def text_lines(report: Mapping) -> list[str]:
    """One sentence per graded finding (or that none was graded), then the method (the PDF)."""
    red = section(report)
    if red is None:
        return []
    if not red["findings"]:
        return [catalogue.NOTHING_GRADED]
    return [f"{f['name']}: {f['text']}." for f in red["findings"]] + [red["method"]]


def csv_rows(report: Mapping, *, accession: str, version, tail: list) -> list[list]:
    """Rows in the report CSV's columns (class, name, count, percent, ci95_low, ci95_high,
    absolute_10e9_per_L, per_100_wbc, note, then ``tail``): class ``rbc_<finding>``, the grade in
    the note (the percent column is a share of leukocytes, so a schistocyte percentage, a share of
    red cells, is written in the note only)."""
    red = section(report)
    if red is None:
        return []
    if not red["findings"]:
        return [[accession, version, "rbc_morphology", catalogue.PANEL[1], "", "", "", "", "", "",
                 catalogue.NOTHING_GRADED, *tail]]
    return [[accession, version, f"rbc_{f['code']}", f["name"], "", "", "", "", "", "", f"graded {f['text']}", *tail]
            for f in red["findings"]]
