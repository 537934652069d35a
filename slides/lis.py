"""What a signed differential says to a laboratory information system, whatever the format:
the result lines with their LOINC codes, units, reference intervals and interpretations, the
report's release status and its free-text comments. FHIR R4 (slides.fhir) and HL7 v2.5.1
(slides.hl7) render these same lines.

Pure Python (no Django).

LOINC: one method family for the whole differential, "method unspecified" (the terms without a
"by Manual count" / "by Automated count" method), under the panel 69738-3 "Differential panel,
method unspecified - Blood". A count made by a digital morphology system and verified cell by cell
by an expert is neither an analyser's automated count nor a count at the microscope, and only this
family has a term for every class the portal reports (immature granulocytes and variant
lymphocytes have no manual-count term). The codes are listed in the README.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .platelets.report import platelet_line
from .release import report_lines as release_lines
from .stats import EXPERT_COUNTED_NOTE, NOT_ASSESSED_NOTE, indeterminate_reason

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

DIFFERENTIAL_PANEL = ("69738-3", "Differential panel, method unspecified - Blood")
# class code -> (percent LOINC, display), (absolute LOINC, display)
LOINC_PERCENT = {
    "neutrophil_segmented": ("26505-8", "Segmented neutrophils/100 leukocytes in Blood"),
    "neutrophil_band": ("26508-2", "Band form neutrophils/100 leukocytes in Blood"),
    "lymphocyte": ("26478-8", "Lymphocytes/100 leukocytes in Blood"),
    "atypical_lymphocyte": ("13046-8", "Variant lymphocytes/100 leukocytes in Blood"),
    "monocyte": ("26485-3", "Monocytes/100 leukocytes in Blood"),
    "eosinophil": ("26450-7", "Eosinophils/100 leukocytes in Blood"),
    "basophil": ("30180-4", "Basophils/100 leukocytes in Blood"),
    "immature_granulocyte": ("38518-7", "Immature granulocytes/100 leukocytes in Blood"),
    "blast": ("26446-5", "Blasts/100 leukocytes in Blood"),
}
LOINC_ABSOLUTE = {
    "neutrophil_segmented": ("30451-9", "Segmented neutrophils [#/volume] in Blood"),
    "neutrophil_band": ("26507-4", "Band form neutrophils [#/volume] in Blood"),
    "lymphocyte": ("26474-7", "Lymphocytes [#/volume] in Blood"),
    "atypical_lymphocyte": ("26477-0", "Variant lymphocytes [#/volume] in Blood"),
    "monocyte": ("26484-6", "Monocytes [#/volume] in Blood"),
    "eosinophil": ("26449-9", "Eosinophils [#/volume] in Blood"),
    "basophil": ("26444-0", "Basophils [#/volume] in Blood"),
    "immature_granulocyte": ("51584-1", "Immature granulocytes [#/volume] in Blood"),
    "blast": ("30376-8", "Blasts [#/volume] in Blood"),
}
# Total neutrophils (segmented + band), the figure most reports carry.
NEUTROPHILS_PERCENT = ("26511-6", "Neutrophils/100 leukocytes in Blood")
NEUTROPHILS_ABSOLUTE = ("26499-4", "Neutrophils [#/volume] in Blood")
NRBC_PER_100 = ("19048-8", "Nucleated erythrocytes/100 leukocytes [Ratio] in Blood")
NEUTROPHIL_CODES = ("neutrophil_segmented", "neutrophil_band")

PERCENT = ("%", "%")  # (unit as printed, UCUM code)
ABSOLUTE = ("10^9/L", "10*9/L")
PER_100_WBC = ("/100 WBC", "/100{WBCs}")
INTERPRETATION_DISPLAY = {"H": "High", "L": "Low", "N": "Normal", "IND": "Indeterminate"}
NOT_ASSESSED = NOT_ASSESSED_NOTE
EXPERT_COUNTED = EXPERT_COUNTED_NOTE


@dataclass
class ResultLine:
    """One reported value (an FHIR Observation, an HL7 OBX)."""

    loinc: tuple[str, str]
    text: str
    codes: tuple[str, ...]  # the portal's class codes it sums
    measure: str  # percent / absolute / per_100_wbc
    value: float | None  # None: not assessed (no value is reported)
    unit: tuple[str, str]
    interval: list | None = None  # 95% confidence interval
    count: int | None = None  # cells counted
    low: float | None = None  # the lab's reference interval
    high: float | None = None
    has_reference: bool = False
    interpretation: str | None = None  # H / L / N / IND (FHIR v3-ObservationInterpretation)
    interpretation_reason: str = ""  # why an IND result is indeterminate (a possible flag, no flag and why)
    notes: list[str] = field(default_factory=list)


def release_status(*, version: int, superseded: bool) -> str:
    """"final" (first signed version), "corrected" (a later version), or "superseded" (a newer
    signed or pending version replaces it: withdrawn in favour of its successor)."""
    if superseded:
        return "superseded"
    return "final" if version == 1 else "corrected"


def _rule_for(rules: Iterable[Mapping], codes: Iterable[str], measure: str) -> Mapping | None:
    wanted = set(codes)
    for rule in rules:
        if set(rule.get("codes") or ()) == wanted and rule.get("measure") == measure:
            return rule
    return None


def result_lines(report: Mapping, *, names: Mapping[str, str]) -> list[ResultLine]:
    """The result lines of a frozen report (``Slide.report``): per class percent (and absolute
    with the WBC count), total neutrophils, erythroblasts per 100 WBC. Each line carries the
    reference interval and interpretation of the lab's rule that measures exactly it."""
    rules = report.get("flags") or []
    not_assessed = set(report.get("not_assessed") or [])
    expert_counted = set(report.get("expert_counted") or [])  # reports signed before it existed: none
    pct, iv, counts = report.get("percentages") or {}, report.get("intervals") or {}, report.get("counts") or {}
    absolute = report.get("absolute") or {}
    lines: list[ResultLine] = []

    def add(loinc, text, codes, measure, value, unit, interval=None, count=None):
        line = ResultLine(loinc=loinc, text=text, codes=tuple(codes), measure=measure, value=value, unit=unit,
                          interval=interval, count=count)
        rule = _rule_for(rules, codes, measure)
        if rule is not None and rule.get("status") != "not_assessed":
            line.low, line.high = rule.get("low"), rule.get("high")
            line.has_reference = line.low is not None or line.high is not None
            line.interpretation = rule.get("interpretation") or (
                {"high": "H", "low": "L"}.get(rule.get("direction") or "", "N"))
            line.interpretation_reason = indeterminate_reason(dict(rule, interpretation=line.interpretation))
        expert_only = [c for c in codes if c in not_assessed]
        by_expert = [c for c in codes if c in expert_counted]
        if expert_only and value is None:
            line.notes.append(NOT_ASSESSED)
        elif expert_only:
            line.notes.append(f"{', '.join(names.get(c, c) for c in expert_only)}: {NOT_ASSESSED}; "
                              "the cells counted were assigned by the expert")
        elif by_expert:
            line.notes.append(EXPERT_COUNTED if len(by_expert) == len(codes) else
                              f"{', '.join(names.get(c, c) for c in by_expert)}: {EXPERT_COUNTED}")
        lines.append(line)

    for code, value in pct.items():
        if code not in LOINC_PERCENT:
            continue
        name = names.get(code, code)
        k = counts.get(code, 0)
        unassessed = code in not_assessed and not k
        add(LOINC_PERCENT[code], f"{name} (%)", [code], "percent", None if unassessed else value, PERCENT,
            None if unassessed else iv.get(code), k)
        if code in absolute and code in LOINC_ABSOLUTE:
            add(LOINC_ABSOLUTE[code], f"{name} (10^9/L)", [code], "absolute",
                None if unassessed else absolute[code], ABSOLUTE)
    neutrophils = report.get("neutrophils")
    if neutrophils and any(c in pct for c in NEUTROPHIL_CODES):
        add(NEUTROPHILS_PERCENT, "Neutrophils, total (%)", NEUTROPHIL_CODES, "percent", neutrophils["percent"],
            PERCENT, neutrophils["interval"], neutrophils["count"])
        if neutrophils.get("absolute") is not None:
            add(NEUTROPHILS_ABSOLUTE, "Neutrophils, total (10^9/L)", NEUTROPHIL_CODES, "absolute",
                neutrophils["absolute"], ABSOLUTE)
    per100 = report.get("per_100_wbc") or {}
    if "erythroblast" in per100:
        k = counts.get("erythroblast", 0)
        unassessed = "erythroblast" in not_assessed and not k
        add(NRBC_PER_100, "Erythroblasts per 100 WBC", ["erythroblast"], "per_100_wbc",
            None if unassessed else per100["erythroblast"], PER_100_WBC,
            None if unassessed else (report.get("per_100_intervals") or {}).get("erythroblast"), k)
    platelets = platelet_line(report)  # only in reports made with the estimate turned on
    if platelets is not None:
        lines.append(ResultLine(codes=("platelets",), measure="platelets", unit=ABSOLUTE, **platelets))
    return lines


def flag_lines(report: Mapping) -> list[str]:
    """The report's flag summary as sentences, the same on every format (HL7 NTE, FHIR conclusion,
    the PDF's first page): why no automatic flag may be raised, the flags raised (the differential's
    and the platelet estimate's), the possible ones."""
    summary = report.get("flag_summary") or {}
    flags = summary.get("flags")
    if flags is None:  # reports signed before the summary existed
        flags = [f["flag"] for f in report.get("flags") or [] if f.get("flag")]
    out = []
    if summary.get("suppressed_reason"):
        out.append(f"No automatic flag: {summary['suppressed_reason']}")
    if summary.get("insufficient"):
        out.append(summary["insufficient"][:1].upper() + summary["insufficient"][1:])
    out.append("Flags: " + "; ".join(flags) + "." if flags else "No flags.")
    for text in summary.get("possible") or []:
        out.append(text[:1].upper() + text[1:])
    return out


def report_comments(report: Mapping, *, status: str, version: int, correction_reason: str = "",
                    successor_version: int | None = None) -> list[str]:
    """The report's free text, in order: release status, flags (or why none), possible flags,
    signature warnings and reason, classes not assessed by the model (or counted by the expert
    alone), count."""
    out = []
    if status == "superseded":
        out.append(f"Superseded by version {successor_version}: this version is withdrawn; use the corrected report."
                   if successor_version else "Superseded by a newer version: this version is withdrawn.")
    if version > 1:
        out.append(f"Corrected report (version {version})" + (f": {correction_reason}" if correction_reason else "."))
    domain = report.get("domain") or {}
    if domain.get("unlike"):
        out.append(domain["message"])
    out += flag_lines(report)
    warnings = report.get("sign_warnings") or []
    if warnings or report.get("sign_reason"):
        out.append("Signed " + ("despite: " + " ".join(warnings) + " " if warnings else "")
                   + f"Reason given: {report.get('sign_reason') or '—'}")
    names = {r.get("code"): r.get("name") or r.get("code") for r in report.get("rows") or []}
    if report.get("not_assessed"):
        out.append("Not assessed by the model (expert only): "
                   f"{', '.join(names.get(c, c) for c in report['not_assessed'])}.")
    if report.get("expert_counted"):
        out.append("Counted by the expert; not pre-classified by the model (every counted cell verified): "
                   f"{', '.join(names.get(c, c) for c in report['expert_counted'])}.")
    out.extend(release_lines(report))  # the interpretive comment; who submitted and released (slides.release)
    out.append(f"{report.get('leukocyte_total', 0)} leukocytes counted (target {report.get('target', '—')}).")
    return out
