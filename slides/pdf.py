"""The signed differential as a PDF (ReportLab): the content of the printable report page, for
archiving and for laboratory systems that take documents. Built from the report stored at
signing, so a PDF made later says what was signed."""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from . import lis
from .morphology.report import text_lines as red_cell_lines
from .platelets.report import text_lines as platelet_text_lines
from .release import report_facts as release_facts
from .selectors import slide_verification_text
from .stats import NO_FLAG_TEXT as STATUS_TEXT
from .stats import NOT_ASSESSED_NOTE as NOT_ASSESSED

FOOTER = "LeukoPortal — decision support; every differential is verified and signed by an expert."


def _num(value, digits: int) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"


def _interval(iv, digits: int = 1) -> str:
    return f"{_num(iv[0], digits)}–{_num(iv[1], digits)}" if iv else "—"


def _table(rows: list[list], widths, *, header: bool = True, marked: tuple[int, ...] = ()) -> Table:
    """``marked``: rows highlighted (reference-interval flags)."""
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
    style = [("BACKGROUND", (0, i), (-1, i), colors.HexColor("#fff3cd")) for i in marked] + [("FONTSIZE", (0, 0), (-1, -1), 9), ("VALIGN", (0, 0), (-1, -1), "TOP"),
             ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey)]
    if header:
        style += [("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"), ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke)]
    table.setStyle(TableStyle(style))
    return table


def _method(slide, report) -> str:
    """The method line frozen at signing; reports signed before it was stored get it rebuilt."""
    if report.get("method"):
        return report["method"]
    if slide.kind == "cells":
        where = f"{slide.cells.count()} cropped cell image(s) uploaded"
    else:
        where = f"white cells located in {slide.fields.count()} field(s)"
    return (f"Digital morphology: {where}, pre-classified by model v{slide.model_version_id or '—'}, "
            f"{slide_verification_text(slide=slide)}.")


def report_pdf(slide, *, release: dict) -> bytes:
    """The PDF of a signed slide's stored report (``slide.report``); ``release``: the version's
    release status and successor (selectors.slide_report_release)."""
    report = slide.report
    styles = getSampleStyleSheet()
    body = styles["BodyText"].clone("cell", fontSize=9, leading=11)
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)

    def para(text: str, style=body) -> Paragraph:  # user text is escaped: Paragraph reads markup
        return Paragraph(escape(str(text)).replace("\n", "<br/>"), style)

    title = f"Leukocyte differential — {slide.code} v{slide.version}" + (" (corrected)" if slide.version > 1 else "")
    story = [Paragraph(escape(title), styles["Title"])]
    warn = styles["BodyText"].clone("warn", fontSize=10, leading=13, textColor=colors.HexColor("#8a1c1c"))
    successor = release.get("successor")
    if release.get("superseded"):
        story += [para(f"SUPERSEDED by version {successor.version}: this report is withdrawn; use the corrected "
                       f"report of version {successor.version}.", warn), Spacer(1, 3 * mm)]
    elif successor is not None:
        story += [para(f"A correction (version {successor.version}) is in progress; this report stands until it "
                       "is signed.", warn), Spacer(1, 3 * mm)]
    facts = [["Accession", para(slide.code)],
             ["Signed", para(f"{timezone.localtime(slide.signed_at):%Y-%m-%d %H:%M} by {slide.signed_by.get_username()}")]]
    if slide.wbc_count:
        facts.append(["WBC count", para(f"{slide.wbc_count} ×10^9/L")])
    facts.append(["Method", para(f"{_method(slide, report)} 95% intervals: {report.get('interval_method', '')}.")])
    if slide.notes:
        facts.append(["Notes", para(slide.notes)])
    if slide.correction_reason:
        facts.append(["Correction", para(slide.correction_reason)])
    if report.get("sign_warnings") or report.get("sign_reason"):
        facts.append(["Signed despite", para(" ".join(report.get("sign_warnings") or []) or "—")])
        facts.append(["Reason", para(report.get("sign_reason") or "—")])
    facts += [[label, para(text)] for label, text in release_facts(report)]  # comment, two-step release
    story += [_table(facts, [32 * mm, 138 * mm], header=False), Spacer(1, 5 * mm)]

    wbc = report.get("wbc_count")
    head = ["Class", "Count", "%", "95% interval"] + (["10^9/L"] if wbc else [])
    rows = [head]
    for r in report["rows"]:
        if r.get("is_leukocyte"):
            if r.get("not_assessed") and not r["count"]:
                rows.append([para(r["name"]), "—", para(NOT_ASSESSED, small), ""] + ([""] if wbc else []))
                continue
            # the class's note: not assessed by the model (a count an expert assigned while other
            # cells were unverified), or counted by the expert (every counted cell verified)
            name = r["name"] + (f" ({r.get('note') or NOT_ASSESSED})"
                                if r.get("not_assessed") or r.get("expert_counted") else "")
            rows.append([para(name), r["count"], _num(r.get("percent"), 1), _interval(r.get("interval"))]
                        + ([_num(r.get("absolute"), 2)] if wbc else []))
    rows.append(["Leukocytes counted", report.get("leukocyte_total", 0), f"target {report.get('target', '')}", ""]
                + ([""] if wbc else []))
    for r in report["rows"]:
        # a non-leukocyte counted, or reported per 100 WBC (erythroblasts): 0 is a result too
        if not r.get("is_leukocyte") and (r["count"] or r.get("per_100_wbc") is not None):
            if r.get("not_assessed") and not r["count"]:
                note = para(NOT_ASSESSED, small)
            elif r.get("per_100_wbc") is not None:
                note = f"{_num(r['per_100_wbc'], 1)} per 100 WBC ({_interval(r.get('interval'))})"
            else:
                note = "waiting for an expert" if r.get("is_abstain") else "not counted as leukocytes"
            rows.append([para(r["name"]), r["count"], note, ""] + ([""] if wbc else []))
    widths = [62 * mm, 20 * mm, 40 * mm, 30 * mm] + ([18 * mm] if wbc else [])
    story += [Paragraph("Differential", styles["Heading2"]), _table(rows, widths)]
    neut = report.get("neutrophils")
    if neut:
        text = f"Neutrophils, total: {_num(neut['percent'], 1)}% (95% {_interval(neut['interval'])})"
        if neut.get("absolute") is not None:
            text += f", {_num(neut['absolute'], 2)} ×10^9/L"
        story += [Spacer(1, 3 * mm), Paragraph(escape(text + "."), styles["BodyText"])]
    summary = report.get("flag_summary") or {}
    domain = report.get("domain") or {}
    standing = [domain.get("unlike") and domain["message"],
                not summary.get("insufficient") and report.get("target_message"),
                *lis.flag_lines(report),  # the flag summary every format prints (platelets included)
                *[f"Count further — {c['message']}" for c in report.get("count_further") or []]]
    standing = [s[:1].upper() + s[1:] for s in standing if s]
    if standing:
        story += [Spacer(1, 3 * mm)] + [para(text, body if text.startswith("No flags") else warn)
                                       for text in standing]
    flags = report.get("flags") or []
    if flags:
        rows = [["Measure", "Value", "95% interval", "Reference", "Flag"]]
        marked = tuple(i for i, f in enumerate(flags, start=1) if f.get("flag"))
        for f in flags:
            reference = f"{'—' if f.get('low') is None else f['low']} – {'—' if f.get('high') is None else f['high']}"
            if f.get("status") == "not_assessed":
                rows.append([para(f"{f['name']} ({f['unit']})"), "—", "", reference, para(NOT_ASSESSED, small)])
                continue
            measure = f"{f['name']} ({f['unit']})"
            rows.append([[para(measure)] + ([para(f["note"], small)] if f.get("note") else []),
                         _num(f.get("value"), 2), _interval(f.get("interval"), 2),
                         reference, para(f.get("flag") or f.get("possible") or STATUS_TEXT.get(f.get("status"), ""),
                                         body if f.get("flag") else small)])
        story += [Paragraph("Reference intervals", styles["Heading2"]),
                  _table(rows, [55 * mm, 20 * mm, 30 * mm, 25 * mm, 40 * mm], marked=marked)]
    if report.get("platelets"):  # only when the lab reports the estimate
        story += [Paragraph("Platelets and red cells", styles["Heading2"])] + [para(t) for t in platelet_text_lines(report)]
    if red_cell_lines(report):  # reports signed since red-cell grading exists (slides.morphology)
        story += [Paragraph("Red-cell morphology", styles["Heading2"])] + [para(t) for t in red_cell_lines(report)]
    story += [Spacer(1, 5 * mm), para(FOOTER, small)]

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.drawString(20 * mm, 10 * mm, f"{slide.code} v{slide.version} · page {doc.page}")
        canvas.restoreState()

    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
                            bottomMargin=18 * mm, title=f"Leukocyte differential {slide.code} v{slide.version}",
                            author="", subject="", creator="LeukoPortal", invariant=True)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()
