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

LOINC_PLATELET_ESTIMATE = ("49497-1", "Platelets [#/volume] in Blood by Estimate")


def platelet_line(report: Mapping) -> dict | None:
    """The estimate's result line for a laboratory information system, as the keyword arguments
    of ``slides.lis.ResultLine`` beyond its unit (10^9/L), or None when the report has no estimate."""
    plt = report.get("platelets")
    if not plt:
        return None
    ref = plt.get("reference") or {}
    line = {"loinc": LOINC_PLATELET_ESTIMATE, "text": "Platelet estimate (10^9/L)", "value": plt["estimate"],
            "interval": list(plt["estimate_interval"]), "notes": []}
    if ref.get("status") not in (None, "no_reference"):
        line.update(low=ref.get("low"), high=ref.get("high"), interpretation=ref.get("interpretation"),
                    has_reference=ref.get("low") is not None or ref.get("high") is not None)
    if ref.get("text"):
        line["notes"].append(ref["text"])
    elif plt.get("clump_note"):
        line["notes"].append(plt["clump_note"])
    line["notes"].append(f"{sum(plt.get('per_field') or [])} platelet(s) in {plt['fields']} field(s); "
                         f"{plt['mean']:g} per field (95% interval {plt['interval'][0]:g}-{plt['interval'][1]:g}).")
    line["notes"].append(plt["method"])
    return line


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
