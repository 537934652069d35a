"""The red-cell section as HL7 v2.5.1 OBX segments (pure Python, hl7apy), appended to the signed
report's ORU^R01 order after the differential's (slides.hl7 calls it).

One OBX per graded finding: OBX-2 CWE, OBX-3 the LOINC term (``LN``) or the local code (``L``,
system ``catalogue.LOCAL_SYSTEM``), OBX-5 the grade as a coded value (``0``, ``1+``, ``2+``,
``3+``, ``present``; local coding system ``L``), OBX-11 the report's status; an NTE with the
ICSH definition (and, for schistocytes, their percentage of red cells). Nothing graded: one OBX
of type ST "No red-cell findings graded." under the section's local code.
"""
from __future__ import annotations

from collections.abc import Mapping

from hl7apy.factories import datatype_factory

from . import catalogue
from .report import section

VERSION = "2.5.1"


def _text(value: str, datatype: str = "FT"):
    return datatype_factory(datatype, value, version=VERSION)


def _coded(code: str, text: str, system: str) -> str:
    """code^text^system, each part escaped (a component may not carry HL7 delimiters)."""
    def esc(part: str) -> str:
        return _text(part, "ST").to_er7()
    return f"{esc(code)}^{esc(text)}^{system}"


def _add(order, *, set_id: int, datatype: str, code: str, value, status: str, observed_at: str,
         notes: list[str]):
    obs = order.add_group("ORU_R01_OBSERVATION")
    obx = obs.add_segment("OBX")
    obx.obx_1 = str(set_id)
    obx.obx_2 = datatype
    obx.obx_3 = code
    obx.obx_5 = value
    obx.obx_11 = status
    obx.obx_14 = observed_at
    for j, note in enumerate(notes, start=1):
        nte = obs.add_segment("NTE")
        nte.nte_1 = str(j)
        nte.nte_3 = _text(note)


def add_observations(order, *, report: Mapping, status: str, observed_at: str) -> None:
    """Append the section's OBX segments to ``order`` (an ORU_R01_ORDER_OBSERVATION group), numbered
    after the OBX already there. ``status``: OBX-11 (F, C, W); ``observed_at``: an HL7 timestamp."""
    red = section(report)
    if red is None:
        return
    set_id = sum(1 for child in order.children if child.name == "ORU_R01_OBSERVATION") + 1
    if not red["findings"]:
        _add(order, set_id=set_id, datatype="ST", code=_coded(*catalogue.PANEL, "L"),
             value=_text(catalogue.NOTHING_GRADED, "ST").to_er7(), status=status, observed_at=observed_at, notes=[])
        return
    for i, f in enumerate(red["findings"], start=set_id):
        system = "LN" if f["system"] == catalogue.LOINC else "L"
        notes = [f"ICSH 2015 grading: {f['definition']}."]
        if f.get("percent") is not None:
            notes.insert(0, f"{f['percent']:g} % of red cells")
        _add(order, set_id=i, datatype="CWE", code=_coded(f["system_code"], f["display"], system),
             value=_coded(f["grade"], catalogue.GRADE_TEXT.get(f["grade"], f["grade"]), "L"), status=status,
             observed_at=observed_at, notes=notes)
