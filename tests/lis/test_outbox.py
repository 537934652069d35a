"""The transactional outbox: signing, correcting and withdrawing write the messages in the signature's
transaction, rendered by the report's own HL7 and FHIR builders; nothing is sent in the request."""
import json

import hl7
import pytest
from django.core.exceptions import ValidationError
from fhir.resources.R4B.bundle import Bundle

from lis.models import OutboxMessage
from slides import services
from slides.models import Slide
from tests.factories import verified_slide
from tests.lis.conftest import corrected, fhir_destination, mllp_destination, signed

pytestmark = pytest.mark.django_db


def test_signing_queues_one_hl7_message_per_destination_with_its_msh_and_the_deliver_task_after_commit(
        reviewer, broker, django_capture_on_commit_callbacks):
    destination = mllp_destination(2575)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        slide = signed("LIS-0001", by=reviewer)
    message = OutboxMessage.objects.get()
    assert (message.slide_id, message.accession, message.version, message.event) == (slide.pk, "LIS-0001", 1, "final")
    assert message.state == "queued" and message.attempts == 0 and message.destination == destination
    msg = hl7.parse(message.payload)
    assert str(msg.segment("MSH")(10)) == message.control_id and len(message.control_id) <= 20
    assert str(msg.segment("MSH")(3)) == "LEUKOPORTAL" and str(msg.segment("MSH")(5)) == "LABLIS"
    assert str(msg.segment("MSH")(6)) == "HOSP"
    assert str(msg.segment("OBR")(3)).split("^")[0] == "LIS-0001/v1" and str(msg.segment("OBR")(25)) == "F"
    assert "PID" not in [str(s[0]) for s in msg]
    assert len(callbacks) == 1  # nothing was sent before the commit: only the task is published after it
    assert broker.messages("default") == [("lis.tasks.deliver", [destination.pk])]


def test_a_refused_signature_writes_no_message(reviewer):
    mllp_destination(2575)
    slide = verified_slide(created_by=reviewer, code="LIS-0002")
    with pytest.raises(services.SignatureNeedsReason):
        services.slide_sign(slide=slide, actor=reviewer)  # below the target count: a reason is needed
    assert not OutboxMessage.objects.exists()
    assert Slide.objects.get(pk=slide.pk).status != Slide.Status.SIGNED


def test_an_inactive_destination_or_none_gets_nothing(reviewer):
    mllp_destination(2575, active=False)
    signed("LIS-0003", by=reviewer)
    assert not OutboxMessage.objects.exists()


def test_a_correction_withdraws_the_original_then_sends_the_corrected_report_in_order(reviewer):
    mllp_destination(2575)
    fhir_destination("http://127.0.0.1:9/fhir")
    v1 = signed("LIS-0004", by=reviewer)
    v2 = corrected(v1, by=reviewer)
    rows = list(OutboxMessage.objects.filter(destination__kind="hl7_mllp").order_by("id"))
    assert [(m.slide_id, m.event) for m in rows] == [(v1.pk, "final"), (v1.pk, "withdrawn"), (v2.pk, "corrected")]
    final, withdrawn, correction = (hl7.parse(m.payload) for m in rows)
    assert {str(s(11)) for s in withdrawn.segments("OBX")} == {"W"}
    assert str(correction.segment("OBR")(25)) == "C" and {str(s(11)) for s in correction.segments("OBX")} <= {"C", "X"}
    assert str(correction.segment("OBR")(3)).startswith("LIS-0004/v2")
    assert "a lymphocyte was a monocyte" in str(correction)
    fhir_rows = list(OutboxMessage.objects.filter(destination__kind="fhir").order_by("id"))
    statuses = [next(e["resource"]["status"] for e in json.loads(m.payload)["entry"]
                     if e["resource"]["resourceType"] == "DiagnosticReport") for m in fhir_rows]
    assert statuses == ["final", "entered-in-error", "corrected"]


def test_the_fhir_message_is_a_valid_transaction_bundle_with_conditional_requests(reviewer):
    fhir_destination("http://127.0.0.1:9/fhir")
    signed("LIS-0005", by=reviewer)
    bundle = json.loads(OutboxMessage.objects.get().payload)
    Bundle.model_validate(bundle)  # raises when invalid
    assert bundle["type"] == "transaction"
    requests = [(e["resource"]["resourceType"], e["request"]["method"]) for e in bundle["entry"]]
    assert requests[0] == ("Specimen", "POST") and requests[-1] == ("DiagnosticReport", "PUT")
    assert bundle["entry"][0]["request"]["ifNoneExist"] == "identifier=urn%3Aleukoportal%3Aspecimen%7CLIS-0005"
    assert bundle["entry"][-1]["request"]["url"] == (
        "DiagnosticReport?identifier=urn%3Aleukoportal%3Aaccession%7CLIS-0005%2Fv1")
    observations = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert observations and all(e["request"]["method"] == "PUT" for e in observations)
    report = bundle["entry"][-1]["resource"]
    assert {r["reference"] for r in report["result"]} == {e["fullUrl"] for e in observations}
    assert "contained" not in report


def test_resending_keeps_the_message_and_gives_it_a_new_control_id_audited(reviewer, lab_admin):
    from annotations.models import AuditEvent
    from lis import services as lis_services

    mllp_destination(2575)
    signed("LIS-0006", by=reviewer)
    message = OutboxMessage.objects.get()
    OutboxMessage.objects.filter(pk=message.pk).update(state="failed", attempts=3, error="rejected")
    old = message.control_id
    with pytest.raises(Exception):
        lis_services.message_resend(actor=reviewer, message=message)  # lab admins only
    again = lis_services.message_resend(actor=lab_admin, message=message)
    assert again.state == "queued" and again.attempts == 0 and again.control_id != old
    assert str(hl7.parse(again.payload).segment("MSH")(10)) == again.control_id
    event = AuditEvent.objects.get(action="lis.resend")
    assert event.before["control_id"] == old and event.after["control_id"] == again.control_id
    for state in ("queued", "sent", "acknowledged"):
        OutboxMessage.objects.filter(pk=message.pk).update(state=state)
        with pytest.raises(ValidationError, match=f"this one is {state}"):
            lis_services.message_resend(actor=lab_admin, message=message)
    assert AuditEvent.objects.filter(action="lis.resend").count() == 1
