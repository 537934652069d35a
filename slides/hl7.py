"""A signed differential as an HL7 v2.5.1 ORU^R01 message (hl7apy), for laboratory information
systems that take HL7 v2 only.

Pure Python (no Django). The result lines, LOINC codes, reference intervals and interpretations
are slides.lis's, the same as the FHIR export's.

* MSH: sending application LEUKOPORTAL, message type ORU^R01^ORU_R01, version 2.5.1, UTF-8.
* No PID: slides carry a de-identified accession code only; the LIS matches it to its order
  through OBR-3 (filler order number).
* OBR: the differential panel (LOINC 69738-3), OBR-22 the signing time, OBR-25 the result status
  (F final, C corrected), OBR-32 the expert who signed.
* NTE after the OBR: the report's comments (flags, warnings and the signature's reason, ...).
* One OBX per result: NM value, UCUM unit, OBX-7 the lab's reference interval, OBX-8 the
  abnormal flag from HL7 table 0078 only (H, L, N); OBX-11 the status (F, C; W for a version
  superseded by a newer one; X where the model cannot assess a class and no cell was assigned to
  it), followed by an NTE for its note. The 95% interval and the number of cells counted follow in
  the OBX's NTE.
* An indeterminate result (FHIR's v3 code IND: a possible flag, a count below its target, flags
  withheld) has no table 0078 value: OBX-8 stays empty and the first NTE says why.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.factories import datatype_factory

from . import lis
from .morphology.hl7 import add_observations as add_red_cell_observations

VERSION = "2.5.1"
RESULT_STATUS = {"final": "F", "corrected": "C", "superseded": "W"}
# HL7 v2.5.1 table 0078 (Interpretation Codes / abnormal flags): the only values OBX-8 may carry.
TABLE_0078 = frozenset({"L", "H", "LL", "HH", "<", ">", "N", "A", "AA", "U", "D", "B", "W", "S", "R", "I", "MS",
                        "VS"})
NO_ABNORMAL_FLAG = "No abnormal flag (indeterminate)"
ORDER_STATUS = {"final": "F", "corrected": "C"}


def _ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S") + value.strftime("%z")


def _text(value: str, datatype: str = "FT") -> object:
    """Text, escaped for HL7 (| ^ ~ \\ & cannot break the message)."""
    return datatype_factory(datatype, value, version=VERSION)


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _reference(line: lis.ResultLine) -> str:
    if line.low is not None and line.high is not None:
        return f"{_number(line.low)}-{_number(line.high)}"
    if line.high is not None:
        return f"<={_number(line.high)}"
    if line.low is not None:
        return f">={_number(line.low)}"
    return ""


def abnormal_flag(line: lis.ResultLine) -> tuple[str, str]:
    """(OBX-8, note): the line's interpretation where HL7 table 0078 has it; else OBX-8 empty and a
    note that says why (FHIR's IND has no table 0078 counterpart: "I" there means "intermediate",
    a susceptibility result)."""
    if not line.interpretation or line.interpretation in TABLE_0078:
        return line.interpretation or "", ""
    reason = line.interpretation_reason or "the result cannot be called normal or abnormal"
    return "", f"{NO_ABNORMAL_FLAG}: {reason}"


def oru_r01(*, report: Mapping, accession: str, version: int, signed_at: datetime, signer: str,
            names: Mapping[str, str], control_id: str, created_at: datetime, superseded: bool = False,
            successor_version: int | None = None, correction_reason: str = "",
            sending_application: str = "LEUKOPORTAL", sending_facility: str = "", receiving_application: str = "",
            receiving_facility: str = "") -> str:
    """The ER7 text of the message (segments separated by carriage returns). MSH-3 to MSH-6 name the
    sending and receiving application and facility (an LIS destination's; the export: LEUKOPORTAL only)."""
    release = lis.release_status(version=version, superseded=superseded)
    msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msg.msh.msh_3.hd_1 = _text(sending_application or "LEUKOPORTAL", "IS")
    for name, value in (("msh_4", sending_facility), ("msh_5", receiving_application), ("msh_6", receiving_facility)):
        if value:
            getattr(msg.msh, name).hd_1 = _text(value, "IS")
    msg.msh.msh_7 = _ts(created_at)
    msg.msh.msh_9 = "ORU^R01^ORU_R01"
    msg.msh.msh_10 = control_id
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = VERSION
    msg.msh.msh_18 = "UNICODE UTF-8"
    order = msg.add_group("ORU_R01_PATIENT_RESULT").add_group("ORU_R01_ORDER_OBSERVATION")
    obr = order.add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_3.ei_1 = _text(f"{accession}/v{version}", "ST")
    obr.obr_3.ei_2 = "LEUKOPORTAL"
    code, display = lis.DIFFERENTIAL_PANEL
    obr.obr_4 = f"{code}^{display}^LN"
    obr.obr_7 = _ts(signed_at)
    obr.obr_22 = _ts(signed_at)
    obr.obr_25 = ORDER_STATUS.get(release, "C" if version > 1 else "F")
    obr.obr_32.ndl_1.cnn_1 = _text(signer, "ST")
    comments = lis.report_comments(report, status=release, version=version, correction_reason=correction_reason,
                                   successor_version=successor_version)
    for i, comment in enumerate(comments, start=1):
        nte = order.add_segment("NTE")
        nte.nte_1 = str(i)
        nte.nte_3 = _text(comment)
    status = RESULT_STATUS[release]
    for i, line in enumerate(lis.result_lines(report, names=names), start=1):
        obs = order.add_group("ORU_R01_OBSERVATION")
        obx = obs.add_segment("OBX")
        obx.obx_1 = str(i)
        obx.obx_2 = "NM"
        obx.obx_3 = f"{line.loinc[0]}^{line.loinc[1]}^LN"
        if line.value is not None:
            obx.obx_5 = _number(line.value)
        obx.obx_6 = f"{line.unit[1]}^{line.unit[1]}^UCUM"
        if line.has_reference:
            obx.obx_7 = _reference(line)
        flag, why = abnormal_flag(line)
        if flag:
            obx.obx_8 = flag
        obx.obx_11 = "X" if line.value is None and status != "W" else status
        obx.obx_14 = _ts(signed_at)
        notes = ([why] if why else []) + list(line.notes)
        if line.interval is not None:
            notes.append(f"95% confidence interval {_number(line.interval[0])}-{_number(line.interval[1])} {line.unit[0]}")
        if line.count is not None:
            notes.append(f"{line.count} cell(s) counted")
        for j, note in enumerate(notes, start=1):
            nte = obs.add_segment("NTE")
            nte.nte_1 = str(j)
            nte.nte_3 = _text(note)
    add_red_cell_observations(order, report=report, status=status, observed_at=_ts(signed_at))
    msg.validate()
    return msg.to_er7()
