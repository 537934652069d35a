"""The record of one attempt as a PDF (ReportLab, as the slide reports are): who sat which test when,
the score with its interval, kappa, per-class sensitivity and PPV, the confusion matrix, pass or fail
with the reasons, and the lab admin's sign-off."""
from __future__ import annotations

import io
from xml.sax.saxutils import escape

from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from .models import Assignment


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _table(rows, *, widths=None) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle([("FONTSIZE", (0, 0), (-1, -1), 8), ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
                               ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def attempt_pdf(assignment: Assignment, *, names: dict[str, str]) -> bytes:
    r = assignment.result
    styles = getSampleStyleSheet()
    body = styles["BodyText"].clone("c", fontSize=9, leading=11)

    def para(text) -> Paragraph:
        return Paragraph(escape(str(text)), body)

    test = assignment.test
    story = [Paragraph(escape(f"Competency record — {test.name} v{test.version}"), styles["Title"])]
    when = timezone.localtime(assignment.submitted_at).strftime("%Y-%m-%d %H:%M")
    facts = [["Person", para(assignment.person.get_username())], ["Submitted", para(when)],
             ["Due", para(assignment.due_date.isoformat())],
             ["Test", para(f"{r['n']} cells with decided reference labels (seed {test.seed}); pass: agreement ≥ "
                           f"{_pct(test.pass_min_agreement)}, zero tolerance on "
                           f"{', '.join(names.get(c, c) for c in test.critical_classes) or 'no class'}")],
             ["Result", para(("PASSED" if r["passed"] else "FAILED") + ("" if r["passed"] else ": " + "; ".join(r["reasons"])))],
             ["Agreement", para(f"{r['correct']} / {r['n']} = {_pct(r['agreement'])} (95 % CI {_pct(r['agreement_ci'][0])}"
                                f"–{_pct(r['agreement_ci'][1])}, Wilson)")],
             ["Cohen's kappa", para(_num(r["kappa"], 3))], ["Not sure", para(r["not_sure"])],
             ["Time per cell", para(f"mean {_num(r['seconds_mean'], 1)} s, median {_num(r['seconds_median'], 1)} s")]]
    story += [_table([["", ""]] + facts, widths=[35 * mm, 200 * mm]), Spacer(1, 4 * mm)]
    per = [["Class", "Cells", "Correct", "Sensitivity", "PPV"]] + [
        [names.get(p["class"], p["class"]), p["n"], p["correct"], _pct(p["sensitivity"]), _pct(p["ppv"])]
        for p in r["per_class"]]
    story += [Paragraph("Per class", styles["Heading3"]), _table(per), Spacer(1, 4 * mm)]
    head = ["Reference \\ called"] + [names.get(c, c)[:14] for c in r["matrix_labels"]]
    rows = [[names.get(code, code)] + r["confusion"][i] for i, code in enumerate(r["labels"])]
    story += [Paragraph("Confusion matrix", styles["Heading3"]), _table([head] + rows), Spacer(1, 6 * mm)]
    if assignment.signed_off_at:
        sign = (f"Signed off by {assignment.signed_off_by.get_username()} on "
                f"{timezone.localtime(assignment.signed_off_at):%Y-%m-%d %H:%M}"
                + (f": {assignment.sign_off_note}" if assignment.sign_off_note else "."))
    else:
        sign = "Not signed off yet by a lab admin."
    story.append(para(sign))
    buf = io.BytesIO()
    SimpleDocTemplate(buf, pagesize=landscape(A4), title=f"Competency record {assignment.pk}",
                      leftMargin=12 * mm, rightMargin=12 * mm).build(story)
    return buf.getvalue()
