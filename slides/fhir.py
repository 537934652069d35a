"""A signed differential as a FHIR R4 DiagnosticReport with one contained Observation per result.

Pure Python. The result lines, LOINC codes (one method family, see slides.lis), reference
intervals and interpretations come from slides.lis, shared with the HL7 v2 export.

Status: the first signed version is "final", a later version "corrected"; a version superseded by
a newer one is exported as "entered-in-error" -- withdrawn in favour of its successor, which its
conclusion names -- so that a system applying it drops the old values and keeps the corrected ones.
"""
from __future__ import annotations

from collections.abc import Mapping

from . import lis
from .morphology.fhir import observations as red_cell_observations

INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
STATUS = {"final": "final", "corrected": "corrected", "superseded": "entered-in-error"}


def _coding(code_display, text):
    code, display = code_display
    return {"coding": [{"system": lis.LOINC, "code": code, "display": display}], "text": text}


def _quantity(value, unit):
    return {"value": value, "unit": unit[0], "system": lis.UCUM, "code": unit[1]}


def _observation(line: lis.ResultLine, *, ident: str, status: str, issued: str) -> dict:
    obs = {
        "resourceType": "Observation",
        "id": ident,
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory", "display": "Laboratory"}]}],
        "code": _coding(line.loinc, line.text),
        "effectiveDateTime": issued,
        "issued": issued,
    }
    if line.value is None:
        obs["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT_SYSTEM, "code": "not-performed",
                                               "display": "Not Performed"}], "text": lis.NOT_ASSESSED}
    else:
        obs["valueQuantity"] = _quantity(line.value, line.unit)
    if line.interpretation:
        interpretation = {"coding": [{"system": INTERPRETATION_SYSTEM, "code": line.interpretation,
                                      "display": lis.INTERPRETATION_DISPLAY[line.interpretation]}]}
        if line.interpretation_reason:  # IND: the possible flag, or why no flag may be raised
            interpretation["text"] = line.interpretation_reason
        obs["interpretation"] = [interpretation]
    if line.has_reference:
        ref = {}
        if line.low is not None:
            ref["low"] = _quantity(line.low, line.unit)
        if line.high is not None:
            ref["high"] = _quantity(line.high, line.unit)
        ref["text"] = "the laboratory's reference interval"
        obs["referenceRange"] = [ref]
    if line.notes:
        obs["note"] = [{"text": n} for n in line.notes]
    components = []
    if line.interval is not None:
        components.append({
            "code": {"text": "95% confidence interval"},
            "valueRange": {"low": _quantity(line.interval[0], line.unit), "high": _quantity(line.interval[1], line.unit)},
        })
    if line.count is not None:
        components.append({"code": {"text": "cells counted"}, "valueInteger": int(line.count)})
    if components:
        obs["component"] = components
    return obs


def diagnostic_report(*, report: Mapping, accession: str, version: int, issued: str, performer: str,
                      names: Mapping[str, str], superseded: bool = False, successor_version: int | None = None,
                      correction_reason: str = "") -> dict:
    """``report``: the frozen differential (``Slide.report``). Returns a FHIR R4 DiagnosticReport
    resource (a dict)."""
    release = lis.release_status(version=version, superseded=superseded)
    status = STATUS[release]
    observations = [_observation(line, ident=f"obs-{i}", status=status, issued=issued)
                    for i, line in enumerate(lis.result_lines(report, names=names), start=1)]
    observations += red_cell_observations(report, status=status, issued=issued, start=len(observations) + 1)
    comments = lis.report_comments(report, status=release, version=version, correction_reason=correction_reason,
                                   successor_version=successor_version)
    return {
        "resourceType": "DiagnosticReport",
        "id": f"slide-{accession}-v{version}".replace("/", "-").replace("_", "-").replace(".", "-")[:64],
        "contained": observations,
        "identifier": [{"system": "urn:leukoportal:accession", "value": f"{accession}/v{version}"}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM",
                                  "display": "Hematology"}]}],
        "code": _coding(lis.DIFFERENTIAL_PANEL, "Leukocyte differential count (digital morphology, expert-verified)"),
        "effectiveDateTime": issued,
        "issued": issued,
        "performer": [{"display": performer}],
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": " ".join(comments),
    }
