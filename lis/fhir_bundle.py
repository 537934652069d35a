"""A signed report as a FHIR R4 transaction Bundle: the Specimen (conditional create on the accession
identifier), one Observation per result and the DiagnosticReport (conditional updates on their own
identifiers), so that sending the same Bundle again changes nothing and creates no second report.

Pure Python (no Django). The DiagnosticReport and its Observations are slides.fhir's (the report
page's FHIR export); this module only moves the contained Observations into entries of their own.
"""
from __future__ import annotations

import copy
import uuid
from urllib.parse import urlencode

ACCESSION_SYSTEM = "urn:leukoportal:accession"
SPECIMEN_SYSTEM = "urn:leukoportal:specimen"
OBSERVATION_SYSTEM = "urn:leukoportal:observation"
MESSAGE_SYSTEM = "urn:leukoportal:message"
BLOOD = {"coding": [{"system": "http://snomed.info/sct", "code": "119297000", "display": "Blood specimen"}]}


def _url(kind: str, system: str, value: str) -> str:
    return f"{kind}?" + urlencode({"identifier": f"{system}|{value}"})


def _full_url(control_id: str, name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{MESSAGE_SYSTEM}/{control_id}/{name}')}"


def transaction_bundle(report: dict, *, accession: str, version: int, control_id: str, timestamp: str) -> dict:
    """``report``: a DiagnosticReport with contained Observations (slides.fhir.diagnostic_report)."""
    report = copy.deepcopy(report)
    specimen_url = _full_url(control_id, "specimen")
    specimen = {"resourceType": "Specimen",
                "identifier": [{"system": SPECIMEN_SYSTEM, "value": accession}],
                "accessionIdentifier": {"system": ACCESSION_SYSTEM, "value": accession},
                "type": BLOOD}
    entries = [{"fullUrl": specimen_url, "resource": specimen,
                "request": {"method": "POST", "url": "Specimen",
                            "ifNoneExist": urlencode({"identifier": f"{SPECIMEN_SYSTEM}|{accession}"})}}]
    refs = {}
    for obs in report.pop("contained", []):
        local = obs.pop("id")
        ident = f"{accession}/v{version}/{local}"
        obs["identifier"] = [{"system": OBSERVATION_SYSTEM, "value": ident}]
        obs["specimen"] = {"reference": specimen_url}
        url = _full_url(control_id, local)
        refs[f"#{local}"] = url
        entries.append({"fullUrl": url, "resource": obs,
                        "request": {"method": "PUT", "url": _url("Observation", OBSERVATION_SYSTEM, ident)}})
    report.pop("id", None)
    report["result"] = [{"reference": refs.get(r["reference"], r["reference"])} for r in report.get("result", [])]
    report["specimen"] = [{"reference": specimen_url}]
    report_ident = f"{accession}/v{version}"
    entries.append({"fullUrl": _full_url(control_id, "report"), "resource": report,
                    "request": {"method": "PUT", "url": _url("DiagnosticReport", ACCESSION_SYSTEM, report_ident)}})
    return {"resourceType": "Bundle", "id": control_id, "type": "transaction",
            "identifier": {"system": MESSAGE_SYSTEM, "value": control_id}, "timestamp": timestamp, "entry": entries}
