"""Order messages from the LIS (ORM^O01, OML^O21) read with python-hl7, and the ACKs that answer them.

Pure Python (no Django). Only what a pending slide needs is read: the order control (ORC-1), the
accession number (ORC-2, else OBR-2, else OBR-3: the first component), the ordered test (OBR-4: code
and coding system), the collection time (OBR-7) and the analyser's WBC count (an OBX coded LOINC
6690-2). The PID segment is never read into anything kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

import hl7
from hl7apy.factories import datatype_factory

ACCEPTED_TYPES = {("ORM", "O01"), ("OML", "O21")}
WBC_LOINC = "6690-2"
NEW, CANCEL = "NW", "CA"
# HL7 table 0357 (message error condition codes)
ERR_SEGMENT_SEQUENCE = ("100", "Segment sequence error")
ERR_REQUIRED_FIELD = ("101", "Required field missing")
ERR_TABLE_VALUE = ("103", "Table value not found")
ERR_UNSUPPORTED_TYPE = ("200", "Unsupported message type")
ERR_INTERNAL = ("207", "Application internal error")


class OrderRefused(Exception):
    """The message cannot be taken: ``ack_code`` AE or AR, ``error`` a table 0357 code, and why."""

    def __init__(self, ack_code: str, error: tuple[str, str], text: str):
        super().__init__(text)
        self.ack_code, self.error, self.text = ack_code, error, text


@dataclass(frozen=True)
class Header:
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    version: str


@dataclass(frozen=True)
class Order:
    order_control: str
    accession: str
    code: str
    coding_system: str
    collected_at: datetime | None
    wbc_count: Decimal | None


def _field(segment, index: int) -> str:
    return str(segment(index)).strip() if len(segment) > index else ""


def _component(segment, index: int, component: int) -> str:
    """``segment``-``index``.``component`` of the first repetition, "" when absent."""
    if len(segment) <= index:
        return ""
    text = str(segment(index)).split("~")[0]
    parts = text.split("^")
    return parts[component - 1].strip() if len(parts) >= component else ""


def _timestamp(text: str) -> datetime | None:
    """An HL7 DTM (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ]); None when empty; ValueError when malformed."""
    text = text.strip()
    if not text:
        return None
    offset = None
    for sign in ("+", "-"):
        if sign in text[8:]:
            text, zone = text[: text.rindex(sign)], text[text.rindex(sign):]
            minutes = int(zone[1:3]) * 60 + int(zone[3:5])
            offset = timezone(timedelta(minutes=minutes if sign == "+" else -minutes))
            break
    text = text.split(".")[0]
    formats = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if len(text) not in formats:
        raise ValueError(f"not an HL7 timestamp: {text!r}")
    value = datetime.strptime(text, formats[len(text)])
    return value.replace(tzinfo=offset) if offset else value


def parse(text: str) -> tuple[hl7.Message, Header]:
    """The message and its header; OrderRefused (AR) when it is no HL7 message."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        msg = hl7.parse(text)
        msh = msg.segment("MSH")
    except Exception as exc:  # noqa: BLE001 - python-hl7 raises several kinds on garbage
        raise OrderRefused("AR", ERR_SEGMENT_SEQUENCE, f"Unparseable message: {type(exc).__name__}: {exc}") from exc
    header = Header(sending_application=_component(msh, 3, 1), sending_facility=_component(msh, 4, 1),
                    control_id=_field(msh, 10), message_type=f"{_component(msh, 9, 1)}^{_component(msh, 9, 2)}",
                    version=_field(msh, 12))
    return msg, header


def order_read(msg: hl7.Message, header: Header) -> Order:
    """The order's facts; OrderRefused with the reason when they are missing or malformed."""
    kind = tuple(header.message_type.split("^"))
    if kind not in ACCEPTED_TYPES:
        raise OrderRefused("AR", ERR_UNSUPPORTED_TYPE,
                           f"Unsupported message type {header.message_type}: send ORM^O01 or OML^O21.")
    if not header.control_id:
        raise OrderRefused("AR", ERR_REQUIRED_FIELD, "MSH-10 (message control ID) is missing.")
    segments = {str(s[0]): s for s in reversed(list(msg))}  # the first of each kind
    orc, obr = segments.get("ORC"), segments.get("OBR")
    if orc is None or obr is None:
        raise OrderRefused("AE", ERR_SEGMENT_SEQUENCE, "The order needs an ORC and an OBR segment.")
    control = _field(orc, 1).upper()
    if control not in (NEW, CANCEL):
        raise OrderRefused("AE", ERR_TABLE_VALUE, f"ORC-1 {control or '(empty)'}: only NW (new) and CA (cancel) are taken.")
    accession = _component(orc, 2, 1) or _component(obr, 2, 1) or _component(obr, 3, 1)
    if not accession:
        raise OrderRefused("AE", ERR_REQUIRED_FIELD, "Missing accession number (ORC-2, OBR-2 or OBR-3).")
    code, system = _component(obr, 4, 1), _component(obr, 4, 3)
    if not code:
        raise OrderRefused("AE", ERR_REQUIRED_FIELD, "OBR-4 (the ordered test) is missing.")
    try:
        collected_at = _timestamp(_field(obr, 7))
    except ValueError:
        raise OrderRefused("AE", ERR_TABLE_VALUE, f"OBR-7 (collection time) is not an HL7 timestamp: {_field(obr, 7)!r}.") from None
    wbc = None
    for segment in msg:
        if str(segment[0]) == "OBX" and _component(segment, 3, 1) == WBC_LOINC:
            try:
                wbc = Decimal(_field(segment, 5))
            except InvalidOperation:
                raise OrderRefused("AE", ERR_TABLE_VALUE,
                                   f"The WBC count (OBX {WBC_LOINC}) is not a number: {_field(segment, 5)!r}.") from None
    return Order(order_control=control, accession=accession, code=code, coding_system=system,
                 collected_at=collected_at, wbc_count=wbc)


def _escaped(value: str, datatype: str = "ST") -> str:
    return datatype_factory(datatype, value, version="2.5.1").to_er7()


def ack(*, header: Header | None, code: str, created_at: datetime, control_id: str,
        error: tuple[str, str] | None = None, text: str = "") -> str:
    """The ACK (ER7) of an order message: MSH, MSA (MSA-2 the order's control ID, MSA-3 the reason)
    and, for AE/AR, an ERR naming the table 0357 code, severity E and the reason (ERR-8)."""
    receiver_app = header.sending_application if header else ""
    receiver_fac = header.sending_facility if header else ""
    msh = "|".join(["MSH", "^~\\&", "LEUKOPORTAL", "", _escaped(receiver_app), _escaped(receiver_fac),
                    created_at.strftime("%Y%m%d%H%M%S"), "", "ACK^" + ("O01" if not header else
                    header.message_type.split("^")[-1] or "O01") + "^ACK", control_id, "P", "2.5.1"])
    segments = [msh, "|".join(["MSA", code, _escaped(header.control_id if header else ""), _escaped(text[:80], "ST")])]
    if error is not None:
        segments.append("|".join(["ERR", "", "", f"{error[0]}^{_escaped(error[1])}^HL70357", "E", "", "", "",
                                  _escaped(text, "TX")]))
    return "\r".join(segments) + "\r"
