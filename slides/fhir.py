"""A signed differential as a FHIR R4 DiagnosticReport with one contained Observation per class.

Pure Python. LOINC codes: percentages per 100 leukocytes and absolute counts (10*9/L) where
the WBC count is known; erythroblasts per 100 WBC.
"""
from __future__ import annotations

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

# class code -> (percent LOINC, display), (absolute LOINC, display) or None
LOINC_PERCENT = {
    "neutrophil_segmented": ("769-0", "Neutrophils.segmented/100 leukocytes in Blood by Manual count"),
    "neutrophil_band": ("764-1", "Neutrophils.band form/100 leukocytes in Blood by Manual count"),
    "lymphocyte": ("736-9", "Lymphocytes/100 leukocytes in Blood by Automated count"),
    "atypical_lymphocyte": ("30413-9", "Lymphocytes.abnormal/100 leukocytes in Blood"),
    "monocyte": ("5905-5", "Monocytes/100 leukocytes in Blood by Automated count"),
    "eosinophil": ("713-8", "Eosinophils/100 leukocytes in Blood by Automated count"),
    "basophil": ("706-2", "Basophils/100 leukocytes in Blood by Automated count"),
    "immature_granulocyte": ("38518-7", "Immature granulocytes/100 leukocytes in Blood"),
    "blast": ("26446-5", "Blasts/100 leukocytes in Blood"),
}
LOINC_ABSOLUTE = {
    "neutrophil_segmented": ("768-2", "Neutrophils.segmented [#/volume] in Blood by Manual count"),
    "lymphocyte": ("731-0", "Lymphocytes [#/volume] in Blood by Automated count"),
    "atypical_lymphocyte": ("26477-0", "Variant lymphocytes [#/volume] in Blood"),
    "monocyte": ("742-7", "Monocytes [#/volume] in Blood by Automated count"),
    "eosinophil": ("711-2", "Eosinophils [#/volume] in Blood by Automated count"),
    "basophil": ("704-7", "Basophils [#/volume] in Blood by Automated count"),
    "blast": ("30376-8", "Blasts [#/volume] in Blood"),
}
# Total neutrophils (segmented + band), the figure most reports carry.
NEUTROPHILS_PERCENT = ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count")
NEUTROPHILS_ABSOLUTE = ("751-8", "Neutrophils [#/volume] in Blood by Automated count")
NRBC_PER_100 = ("19048-8", "Nucleated erythrocytes/100 leukocytes in Blood")
DIFFERENTIAL_PANEL = ("69738-3", "Differential panel, method unspecified - Blood")


def _coding(code_display, text):
    code, display = code_display
    return {"coding": [{"system": LOINC, "code": code, "display": display}], "text": text}


def _interval_component(lo, hi, unit, ucum):
    return {
        "code": {"text": "95% confidence interval"},
        "valueRange": {
            "low": {"value": lo, "unit": unit, "system": UCUM, "code": ucum},
            "high": {"value": hi, "unit": unit, "system": UCUM, "code": ucum},
        },
    }


def diagnostic_report(*, report: dict, accession: str, version: int, issued: str, performer: str,
                      names: dict[str, str]) -> dict:
    """``report``: the frozen differential (percentages, intervals, counts, absolute,
    per_100_wbc, flags...). Returns a FHIR R4 DiagnosticReport resource (a dict)."""
    observations: list[dict] = []

    def add(code_display, text, value, unit, ucum, interval=None, count=None):
        obs = {
            "resourceType": "Observation",
            "id": f"obs-{len(observations) + 1}",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory", "display": "Laboratory"}]}],
            "code": _coding(code_display, text),
            "effectiveDateTime": issued,
            "issued": issued,
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
        }
        components = []
        if interval is not None:
            components.append(_interval_component(interval[0], interval[1], unit, ucum))
        if count is not None:
            components.append({"code": {"text": "cells counted"}, "valueInteger": int(count)})
        if components:
            obs["component"] = components
        observations.append(obs)

    pct, iv, counts = report["percentages"], report["intervals"], report["counts"]
    absolute = report.get("absolute") or {}
    for code, value in pct.items():
        if code not in LOINC_PERCENT:
            continue
        name = names.get(code, code)
        add(LOINC_PERCENT[code], f"{name} (%)", value, "%", "%", iv.get(code), counts.get(code, 0))
        if code in absolute and code in LOINC_ABSOLUTE:
            add(LOINC_ABSOLUTE[code], f"{name} (10^9/L)", absolute[code], "10*9/L", "10*9/L")
    neut = [c for c in ("neutrophil_segmented", "neutrophil_band") if c in pct]
    if neut and report.get("neutrophils"):
        n = report["neutrophils"]
        add(NEUTROPHILS_PERCENT, "Neutrophils, total (%)", n["percent"], "%", "%", n["interval"], n["count"])
        if n.get("absolute") is not None:
            add(NEUTROPHILS_ABSOLUTE, "Neutrophils, total (10^9/L)", n["absolute"], "10*9/L", "10*9/L")
    per100 = report.get("per_100_wbc") or {}
    if "erythroblast" in per100:
        add(NRBC_PER_100, "Erythroblasts per 100 WBC", per100["erythroblast"], "/100 WBC", "/100{WBCs}",
            (report.get("per_100_intervals") or {}).get("erythroblast"), counts.get("erythroblast", 0))

    flags = [f["flag"] for f in report.get("flags", []) if f.get("flag")]
    conclusion = "; ".join(flags) if flags else "No flags."
    return {
        "resourceType": "DiagnosticReport",
        "id": f"slide-{accession}-v{version}".replace("/", "-").replace("_", "-").replace(".", "-")[:64],
        "contained": observations,
        "identifier": [{"system": "urn:leukoportal:accession", "value": f"{accession}/v{version}"}],
        "status": "final" if version == 1 else "corrected",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM",
                                  "display": "Hematology"}]}],
        "code": _coding(DIFFERENTIAL_PANEL, "Leukocyte differential count (digital morphology, expert-verified)"),
        "effectiveDateTime": issued,
        "issued": issued,
        "performer": [{"display": performer}],
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": conclusion + f" {report.get('leukocyte_total', 0)} leukocytes counted.",
    }
