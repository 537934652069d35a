"""The red-cell section as FHIR R4 Observations (pure Python), contained in the signed report's
DiagnosticReport beside the differential's (slides.fhir appends them).

One Observation per graded finding: ``code`` LOINC where the catalogue has it, else the local
system; ``valueCodeableConcept`` the grade (``catalogue.GRADE_SYSTEM``), schistocytes with a
component giving their percentage of red cells. Nothing graded: one Observation with the
section's local code and ``valueString`` "No red-cell findings graded.".
"""
from __future__ import annotations

from collections.abc import Mapping

from . import catalogue
from .report import section

CATEGORY = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                         "code": "laboratory", "display": "Laboratory"}]}]


def _base(ident: str, *, status: str, issued: str, system: str, code: str, display: str) -> dict:
    return {"resourceType": "Observation", "id": ident, "status": status, "category": CATEGORY,
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "effectiveDateTime": issued, "issued": issued}


def observations(report: Mapping, *, status: str, issued: str, start: int) -> list[dict]:
    """The section's Observations, ids ``obs-<start>``, ``obs-<start+1>``, ... (none for a report
    signed before the section existed)."""
    red = section(report)
    if red is None:
        return []
    if not red["findings"]:
        obs = _base(f"obs-{start}", status=status, issued=issued, system=catalogue.LOCAL_SYSTEM,
                    code=catalogue.PANEL[0], display=catalogue.PANEL[1])
        obs["valueString"] = catalogue.NOTHING_GRADED
        return [obs]
    out = []
    for i, f in enumerate(red["findings"], start=start):
        obs = _base(f"obs-{i}", status=status, issued=issued, system=f["system"], code=f["system_code"],
                    display=f["display"])
        obs["code"]["text"] = f["name"]
        obs["valueCodeableConcept"] = {"coding": [{"system": catalogue.GRADE_SYSTEM, "code": f["grade"],
                                                   "display": catalogue.GRADE_TEXT.get(f["grade"], f["grade"])}],
                                       "text": f["text"]}
        if f.get("percent") is not None:
            obs["component"] = [{"code": {"text": "percentage of red cells"},
                                 "valueQuantity": {"value": f["percent"], "unit": "%",
                                                   "system": "http://unitsofmeasure.org", "code": "%"}}]
        obs["note"] = [{"text": f"ICSH 2015 grading: {f['definition']}."}]
        out.append(obs)
    return out
