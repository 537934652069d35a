"""Reading orders and writing ACKs (lis.orders, no database): where the accession number comes from,
timestamps, the WBC count, and the refusals' codes."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import hl7
import pytest

from lis import orders

MSH = "MSH|^~\\&|HIS|GENERAL|LEUKOPORTAL|HEMLAB|20261207101010||ORM^O01|C1|P|2.5.1"


def read(*segments: str) -> orders.Order:
    msg, header = orders.parse("\r".join((MSH,) + segments))
    return orders.order_read(msg, header)


@pytest.mark.parametrize("orc, obr, accession", [
    ("ORC|NW|A-100", "OBR|1|B-200|C-300|WBCDIFF", "A-100"),
    ("ORC|NW|", "OBR|1|B-200|C-300|WBCDIFF", "B-200"),
    ("ORC|NW|", "OBR|1||C-300^LAB|WBCDIFF", "C-300"),
])
def test_the_accession_is_orc2_else_obr2_else_obr3(orc, obr, accession):
    assert read(orc, obr).accession == accession


def test_collection_time_zone_code_system_and_wbc_are_read():
    order = read("ORC|NW|A-1", "OBR|1|A-1||57021-8^CBC^LN|||202612070930-0500",
                 "OBX|1|NM|6690-2^WBC^LN||12.3|10*9/L")
    assert order.collected_at == datetime(2026, 12, 7, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert (order.code, order.coding_system, order.wbc_count) == ("57021-8", "LN", Decimal("12.3"))
    assert read("ORC|NW|A-1", "OBR|1|A-1||WBCDIFF").collected_at is None


@pytest.mark.parametrize("segments, code, error, text", [
    (("ORC|XO|A-1", "OBR|1|A-1||WBCDIFF"), "AE", "103", "only NW (new) and CA (cancel)"),
    (("OBR|1|A-1||WBCDIFF",), "AE", "100", "needs an ORC and an OBR"),
    (("ORC|NW|A-1", "OBR|1|A-1|"), "AE", "101", "OBR-4"),
    (("ORC|NW|A-1", "OBR|1|A-1||WBCDIFF|||2026-12-07"), "AE", "103", "OBR-7"),
    (("ORC|NW|A-1", "OBR|1|A-1||WBCDIFF", "OBX|1|NM|6690-2^WBC^LN||high"), "AE", "103", "not a number"),
])
def test_refusals_name_the_table_0357_code_and_why(segments, code, error, text):
    with pytest.raises(orders.OrderRefused) as refused:
        read(*segments)
    assert (refused.value.ack_code, refused.value.error[0]) == (code, error) and text in refused.value.text


def test_the_ack_answers_the_orders_control_id_and_escapes_the_reason():
    _, header = orders.parse(MSH)
    text = orders.ack(header=header, code="AE", created_at=datetime(2026, 12, 7, 10, 0), control_id="LPACK",
                      error=orders.ERR_TABLE_VALUE, text="Unknown order code GLU^Glucose|x")
    ack = hl7.parse(text)
    assert str(ack.segment("MSH")(9)) == "ACK^O01^ACK" and str(ack.segment("MSH")(5)) == "HIS"
    assert (str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))) == ("AE", "C1")
    err = ack.segment("ERR")
    assert str(err(3)) == "103^Table value not found^HL70357" and str(err(4)) == "E"
    assert ack.unescape(str(err(8))) == "Unknown order code GLU^Glucose|x"
