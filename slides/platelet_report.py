"""The platelet estimate in the signed report's formats: the result line for a laboratory
information system (FHIR, HL7 v2), the CSV rows and the PDF's lines, read from a frozen report
that carries one (``report["platelets"]``: only when the lab turned the
estimate on). Pure Python.

LOINC 49497-1 "Platelets [#/volume] in Blood by Estimate": the term for a numeric platelet count
estimated from a blood smear (platelets per field x a factor), which is what the portal reports;
not 777-3 (an analyser's automated count) nor 9317-9 (a qualitative adequacy).
"""
from __future__ import annotations

from collections.abc import Mapping

from .lis import ABSOLUTE, ResultLine

LOINC_PLATELET_ESTIMATE = ("49497-1", "Platelets [#/volume] in Blood by Estimate")


def platelet_lines(report: Mapping) -> list[ResultLine]:
    plt = report.get("platelets")
    if not plt:
        return []
    ref = plt.get("reference") or {}
    line = ResultLine(loinc=LOINC_PLATELET_ESTIMATE, text="Platelet estimate (10^9/L)", codes=("platelets",),
                      measure="platelets", value=plt["estimate"], unit=ABSOLUTE,
                      interval=list(plt["estimate_interval"]))
    if ref.get("status") not in (None, "no_reference"):
        line.low, line.high = ref.get("low"), ref.get("high")
        line.has_reference = line.low is not None or line.high is not None
        line.interpretation = ref.get("interpretation")
    if ref.get("text"):
        line.notes.append(ref["text"])
    elif plt.get("clump_note"):
        line.notes.append(plt["clump_note"])
    line.notes.append(f"{sum(plt.get('per_field') or [])} platelet(s) in {plt['fields']} field(s); "
                      f"{plt['mean']:g} per field (95% interval {plt['interval'][0]:g}-{plt['interval'][1]:g}).")
    line.notes.append(plt["method"])
    return [line]


def csv_rows(report: Mapping, *, accession: str, version: int, tail: list) -> list[list]:
    """Rows in the report CSV's columns (class, name, count, percent, ci95_low, ci95_high,
    absolute_10e9_per_L, per_100_wbc, note, then ``tail``): the platelet estimate (count = platelets
    counted over the fields, the interval = the estimate's) and red cells per field."""
    plt = report.get("platelets")
    if not plt:
        return []
    ref = plt.get("reference") or {}
    note = " ".join(x for x in (ref.get("text") or plt.get("clump_note") or "", plt["method"]) if x)
    iv = plt["estimate_interval"]
    red = plt["red_cells"]
    return [
        [accession, version, "platelet_estimate", "Platelet estimate", sum(plt["per_field"]), "", iv[0], iv[1],
         plt["estimate"], "", note, *tail],
        [accession, version, "platelets_per_field", "Platelets per field (mean)", sum(plt["per_field"]), "",
         plt["interval"][0], plt["interval"][1], "", "", f"mean {plt['mean']} over {plt['fields']} field(s)", *tail],
        [accession, version, "red_cells_per_field", "Red cells per field (mean)", red["total"], "", "", "", "", "",
         f"mean {red['mean']}; WBC:RBC {plt.get('wbc_rbc_ratio') or '—'}", *tail],
    ]


def text_lines(report: Mapping) -> list[str]:
    """The platelet section as sentences (the PDF)."""
    plt = report.get("platelets")
    if not plt:
        return []
    ref = plt.get("reference") or {}
    lo, hi = plt["estimate_interval"]
    out = [f"Platelet estimate: {plt['estimate']:g} {plt['unit']} (95% interval {lo:g}–{hi:g}); "
           f"{plt['mean']:g} platelets per field (95% interval {plt['interval'][0]:g}–{plt['interval'][1]:g}) "
           f"over {plt['fields']} field(s)."]
    if ref.get("status") == "flag":
        out.append(f"Flag: {ref['flag']}.")
    if ref.get("text"):
        out.append(ref["text"])
    elif plt.get("clump_note"):
        out.append(plt["clump_note"])
    red = plt["red_cells"]
    out.append(f"Red cells per field: {red['mean']:g} (mean); WBC:RBC {plt.get('wbc_rbc_ratio') or '—'}.")
    out.append(plt["method"])
    return out
