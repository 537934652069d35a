"""Delivery against real peers on 127.0.0.1: an MLLP LIS (python-hl7's server) answering AA, AE, AR, an
ACK for another message or nothing, and a FHIR server validating with fhir.resources that can refuse,
fail or stall."""
import time

import pytest
from django.utils import timezone

from lis import delivery
from lis.models import Destination, OutboxMessage
from tests.lis.conftest import corrected, fhir_destination, mllp_destination, signed

pytestmark = pytest.mark.django_db


def deliver(destination):
    return delivery.destination_deliver(destination_id=destination.pk)


def make_due():
    """As if the waits were over: every queued message is due, no destination is paused."""
    OutboxMessage.objects.filter(state="queued").update(next_attempt_at=timezone.now())
    Destination.objects.update(paused_until=None)


def test_aa_with_the_messages_control_id_acknowledges_it(reviewer, mllp_lis):
    destination = mllp_destination(mllp_lis.port)
    signed("DLV-0001", by=reviewer)
    assert deliver(destination) == 1
    message = OutboxMessage.objects.get()
    assert message.state == "acknowledged" and message.attempts == 1 and message.answer_code == "AA"
    assert message.acknowledged_at is not None and f"MSA|AA|{message.control_id}" in message.answer
    assert mllp_lis.control_ids() == [message.control_id]
    assert deliver(destination) == 0  # nothing left: not sent twice


def test_ae_is_retried_after_a_bounded_backoff_then_delivered(reviewer, mllp_lis):
    destination = mllp_destination(mllp_lis.port, backoff_s=30, backoff_max_s=60)
    signed("DLV-0002", by=reviewer)
    mllp_lis.mode = "AE"
    before = timezone.now()
    deliver(destination)
    message = OutboxMessage.objects.get()
    assert message.state == "queued" and message.attempts == 1 and message.answer_code == "AE"
    assert "Unknown filler order number" in message.error
    assert 29 <= (message.next_attempt_at - before).total_seconds() <= 40
    assert deliver(destination) == 0  # not due yet
    mllp_lis.mode = "AA"
    make_due()
    deliver(destination)
    message.refresh_from_db()
    assert message.state == "acknowledged" and message.attempts == 2
    assert mllp_lis.control_ids() == [message.control_id] * 2  # the same message again, never a new one


def test_ar_stops_the_message_with_the_lis_error_and_holds_the_slides_later_messages(reviewer, mllp_lis):
    destination = mllp_destination(mllp_lis.port)
    v1 = signed("DLV-0003", by=reviewer)
    mllp_lis.mode = "AR"
    mllp_lis.reason = "Order DLV-0003 is closed"
    deliver(destination)
    first = OutboxMessage.objects.get()
    assert first.state == "failed" and first.answer_code == "AR" and "Order DLV-0003 is closed" in first.error
    mllp_lis.mode = "AA"
    corrected(v1, by=reviewer)  # withdrawal of v1 and the corrected v2 queue behind the failed final
    other = signed("DLV-0004", by=reviewer)
    deliver(destination)
    states = dict(OutboxMessage.objects.values_list("event", "state").filter(accession="DLV-0003"))
    assert states == {"final": "failed", "withdrawn": "queued", "corrected": "queued"}
    assert OutboxMessage.objects.get(slide=other).state == "acknowledged"  # another slide is not held


def test_no_answer_or_an_ack_for_another_message_is_retried_and_the_last_attempt_fails(reviewer, mllp_lis):
    destination = mllp_destination(mllp_lis.port, max_attempts=2, timeout_s=0.5)
    signed("DLV-0005", by=reviewer)
    mllp_lis.mode = "silent"
    started = time.monotonic()
    deliver(destination)
    assert time.monotonic() - started < 5
    message = OutboxMessage.objects.get()
    assert message.state == "queued" and "no answer within 0.5 s" in message.error
    mllp_lis.mode = "wrong"
    make_due()
    deliver(destination)
    message.refresh_from_db()
    assert message.state == "failed" and message.attempts == 2
    assert "gave up after 2 attempts" in message.error and "SOMEONE-ELSE" in message.error


def test_a_correction_never_overtakes_its_original(reviewer, mllp_lis):
    destination = mllp_destination(mllp_lis.port)
    v1 = signed("DLV-0006", by=reviewer)
    corrected(v1, by=reviewer)
    mllp_lis.mode = "AE"
    deliver(destination)  # the final is refused for now; its slide's later messages wait behind it
    assert mllp_lis.filler_orders() == ["DLV-0006/v1"]
    mllp_lis.mode = "AA"
    make_due()
    deliver(destination)
    assert mllp_lis.filler_orders() == ["DLV-0006/v1", "DLV-0006/v1", "DLV-0006/v1", "DLV-0006/v2"]
    assert list(OutboxMessage.objects.order_by("id").values_list("event", "state")) == [
        ("final", "acknowledged"), ("withdrawn", "acknowledged"), ("corrected", "acknowledged")]


def test_an_unreachable_lis_pauses_the_destination_so_nothing_overtakes(reviewer, mllp_lis):
    destination = mllp_destination(mllp_lis.port)
    mllp_lis.stop()
    for i in range(3):
        signed(f"DLV-01{i}0", by=reviewer)
    assert deliver(destination) == 1  # the oldest was tried; the others wait
    rows = list(OutboxMessage.objects.order_by("id"))
    assert [m.attempts for m in rows] == [1, 0, 0] and "cannot connect" in rows[0].error
    paused = Destination.objects.get().paused_until
    assert paused == rows[0].next_attempt_at
    OutboxMessage.objects.filter(pk=rows[0].pk).update(next_attempt_at=timezone.now())
    assert deliver(destination) == 0  # the destination waits, though a message is due
    mllp_lis.start()
    make_due()
    assert deliver(destination) == 3
    assert mllp_lis.filler_orders() == ["DLV-0100/v1", "DLV-0110/v1", "DLV-0120/v1"]
    assert Destination.objects.get().paused_until is None


def test_a_second_deliverer_for_the_same_destination_stands_aside(reviewer, mllp_lis):
    from django.core.cache import cache

    destination = mllp_destination(mllp_lis.port)
    signed("DLV-0007", by=reviewer)
    cache.set(delivery._lock_key(destination.pk), "someone", timeout=30)
    assert deliver(destination) is None
    assert OutboxMessage.objects.get().state == "queued" and mllp_lis.received == []


# --- FHIR ------------------------------------------------------------------------------------
def test_fhir_bundle_accepted_once_and_a_retry_creates_no_second_report(reviewer, fhir_server):
    destination = fhir_destination(fhir_server.url, timeout_s=0.5)
    signed("DLV-0008", by=reviewer)
    fhir_server.mode, fhir_server.stall_s = "stall", 1.0  # the server applies the Bundle; its answer comes too late
    deliver(destination)
    message = OutboxMessage.objects.get()
    assert message.state == "queued" and "no answer" in message.error
    time.sleep(1.0)
    assert len(fhir_server.bundles) == 1 and fhir_server.creates["DiagnosticReport"] == 1
    fhir_server.mode = "ok"
    make_due()
    deliver(destination)  # the retry: the same Bundle again
    message.refresh_from_db()
    assert message.state == "acknowledged" and message.answer_code == "200", message.error
    assert fhir_server.invalid == [] and set(fhir_server.tokens) == {"Bearer s3cret"}
    assert len(fhir_server.bundles) == 2 and fhir_server.bundles[0] == fhir_server.bundles[1]
    assert fhir_server.creates["DiagnosticReport"] == 1 and len(fhir_server.reports()) == 1
    assert fhir_server.creates["Specimen"] == 1 and fhir_server.creates["Observation"] == len(
        [e for e in fhir_server.bundles[0]["entry"] if e["resource"]["resourceType"] == "Observation"])


def test_fhir_4xx_stops_with_the_operation_outcome_and_5xx_or_a_stall_is_retried(reviewer, fhir_server):
    destination = fhir_destination(fhir_server.url, timeout_s=0.5)
    signed("DLV-0009", by=reviewer)
    fhir_server.mode = "500"
    deliver(destination)
    message = OutboxMessage.objects.get()
    assert message.state == "queued" and message.answer_code == "500" and "database unavailable" in message.error
    fhir_server.mode, fhir_server.stall_s = "stall", 2
    make_due()
    deliver(destination)
    message.refresh_from_db()
    assert message.state == "queued" and message.attempts == 2 and "no answer" in message.error
    fhir_server.mode = "400"
    make_due()
    deliver(destination)
    message.refresh_from_db()
    assert message.state == "failed" and message.answer_code == "400"
    assert "Specimen accession not known to this server" in message.error


def test_mllp_inside_tls_verifies_the_lis_certificate(reviewer, tmp_path, monkeypatch):
    """A TLS MLLP LIS whose certificate the machine trusts gets the message; one it does not trust is
    never sent anything (the connection fails, the message waits)."""
    import ssl
    import subprocess

    from tests.lis.peers import MllpLis

    key, cert = tmp_path / "lis.key", tmp_path / "lis.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    lis = MllpLis(ssl_context=context).start()
    try:
        destination = mllp_destination(lis.port, host="localhost", tls=True)
        signed("TLS-0001", by=reviewer)
        deliver(destination)  # the machine does not trust the certificate yet
        message = OutboxMessage.objects.get()
        assert message.state == "queued" and "SSL" in message.error and lis.received == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now it does (the system's trust store, as deployed)
        make_due()
        deliver(destination)
        message.refresh_from_db()
        assert message.state == "acknowledged" and lis.control_ids() == [message.control_id]
    finally:
        lis.close()
