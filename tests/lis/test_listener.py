"""``manage.py lis_listen`` started as a process, a real MLLP client (python-hl7's) sending orders: good
ORM^O01 and OML^O21 orders create pending slides with their WBC count and collection time; malformed,
unknown-code and accession-less orders are answered AR/AE with an ERR saying why and change nothing; the
same message twice changes nothing; a cancel removes a pending slide without images; nothing from PID
is stored anywhere."""
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import hl7
import pytest
from hl7.client import MLLPClient

from annotations.models import AuditEvent
from lis.models import InboundMessage
from slides.models import Slide
from tests.conftest import REPO, _worker_env
from tests.factories import SlideFieldFactory
from tests.lis.peers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT_ID, FAMILY, GIVEN, BIRTH = "MRN778899", "Wolfeschlegel", "Hubertina", "19580412"


def order(control_id: str, accession: str = "ORD-1001", *, kind: str = "ORM^O01^ORM_O01", control: str = "NW",
          code: str = "WBCDIFF^Blood film differential^L", wbc: str | None = "7.45") -> str:
    segments = [
        f"MSH|^~\\&|HIS|GENERAL|LEUKOPORTAL|HEMLAB|20261207101010||{kind}|{control_id}|P|2.5.1",
        f"PID|1||{PATIENT_ID}^^^GENERAL^MR||{FAMILY}^{GIVEN}||{BIRTH}|F",
        f"ORC|{control}|{accession}",
        f"OBR|1|{accession}||{code}|||20261207093000+0100",
    ]
    if wbc is not None:
        segments.append(f"OBX|1|NM|6690-2^Leukocytes [#/volume] in Blood^LN||{wbc}|10*9/L")
    return "\r".join(segments)


@pytest.fixture
def listener(settings, tmp_path, order_codes):
    port = free_port()
    log = tmp_path / "listener.log"
    proc = subprocess.Popen([sys.executable, "manage.py", "lis_listen", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=_worker_env(settings), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 60
    while "listening" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("lis_listen did not start:\n" + log.read_text())
        time.sleep(0.2)
    proc.port, proc.log_path = port, log
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
    assert "stopped" in log.read_text()  # SIGTERM ends it cleanly


def send(port: int, *messages: str) -> list[hl7.Message]:
    """Send the messages on one connection; each framed answer parsed."""
    answers = []
    with MLLPClient("127.0.0.1", port) as client:
        for message in messages:
            raw = client.send_message(message)
            assert raw.startswith(b"\x0b") and raw.endswith(b"\x1c\x0d")
            answers.append(hl7.parse(raw[1:-2].decode("utf-8")))
    return answers


def msa(ack: hl7.Message) -> tuple[str, str]:
    return str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))


def err(ack: hl7.Message) -> str:
    """The ERR segment, its escape sequences read back (\\S\\ is ^)."""
    return ack.unescape(str(ack.segment("ERR")))


def test_orders_create_pending_slides_and_every_refusal_says_why(listener):
    good, oml, dup = order("MSG-1"), order("MSG-2", "ORD-1002", kind="OML^O21^OML_O21",
                                          code="57021-8^CBC W Auto Differential panel^LN", wbc=None), order("MSG-1")
    answers = send(listener.port, good, oml, dup)
    assert [msa(a) for a in answers] == [("AA", "MSG-1"), ("AA", "MSG-2"), ("AA", "MSG-1")]
    assert str(answers[2]).split("\r")[1:] == str(answers[0]).split("\r")[1:]  # the same ACK, nothing redone
    slide = Slide.objects.get(code="ORD-1001")
    assert slide.version == 1 and slide.status == Slide.Status.PROCESSING and not slide.fields.exists()
    assert slide.wbc_count == Decimal("7.45")
    assert slide.notes == "Ordered by the LIS: blood film differential (WBCDIFF); collected 2026-12-07 08:30."
    # (09:30 +01:00 in the lab's time zone, UTC)
    assert Slide.objects.get(code="ORD-1002").wbc_count is None
    assert Slide.objects.filter(code="ORD-1001").count() == 1
    assert InboundMessage.objects.filter(control_id="MSG-1").count() == 1

    refused = send(listener.port,
                   "this is not HL7",
                   order("MSG-3", "ORD-1003", code="GLU^Glucose^L"),
                   order("MSG-4", "").replace("OBR|1|||", "OBR|1|||"),
                   order("MSG-5", "ORD-1005", kind="ADT^A01^ADT_A01"))
    assert msa(refused[0])[0] == "AR" and "Unparseable" in err(refused[0])
    assert msa(refused[1]) == ("AE", "MSG-3") and "103^Table value not found" in err(refused[1])
    assert "Unknown order code GLU" in err(refused[1])
    assert msa(refused[2]) == ("AE", "MSG-4") and "101^Required field missing" in err(refused[2])
    assert "Missing accession number" in err(refused[2])
    assert msa(refused[3]) == ("AR", "MSG-5") and "Unsupported message type ADT^A01" in err(refused[3])
    assert not Slide.objects.filter(code__in=["ORD-1003", "ORD-1005"]).exists()

    # Nothing that identifies the patient is stored: not on the slides, the order log or the audit trail.
    stored = " ".join(str(v) for model in (Slide, InboundMessage, AuditEvent)
                      for row in model.objects.values() for v in row.values())
    for value in (PATIENT_ID, FAMILY, GIVEN, BIRTH):
        assert value not in stored
    assert listener.poll() is None  # still listening after garbage


def test_a_cancel_removes_a_pending_slide_but_not_one_with_images(listener):
    send(listener.port, order("NEW-1", "ORD-2001"), order("NEW-2", "ORD-2002"))
    SlideFieldFactory(slide=Slide.objects.get(code="ORD-2002"))
    answers = send(listener.port, order("CAN-1", "ORD-2001", control="CA"), order("CAN-2", "ORD-2002", control="CA"),
                   order("CAN-3", "ORD-2999", control="CA"))
    assert [msa(a)[0] for a in answers] == ["AA", "AR", "AE"]
    assert "has images already" in err(answers[1]) and "No order ORD-2999" in err(answers[2])
    assert not Slide.objects.filter(code="ORD-2001").exists()
    assert Slide.objects.filter(code="ORD-2002").exists()
    assert AuditEvent.objects.filter(action="lis.order_cancel").count() == 1
    assert AuditEvent.objects.filter(action="lis.order_receive").count() == 2
