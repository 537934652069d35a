"""The transactional outbox: a signed, corrected or withdrawn report becomes one message per active
destination, written in the caller's transaction (the signature's), and the delivery task is
enqueued once that transaction commits (``lis.tasks.deliver``). Nothing is sent here.

This module sits below the slides app (slides.services calls it); the report's formats are rendered
by the caller (slides.exports: the same HL7 and FHIR builders as the report page's exports).
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from django.utils import timezone

from leukoportal.queueing import enqueue_on_commit

from . import fhir_bundle
from .models import Destination, OutboxMessage

DELIVER_TASK = "lis.tasks.deliver"

#: render_hl7(control_id=, created_at=, sending_application=, sending_facility=, receiving_application=,
#: receiving_facility=) -> ER7 text
RenderHl7 = Callable[..., str]
#: render_fhir() -> a DiagnosticReport with contained Observations
RenderFhir = Callable[[], dict]


def control_id_new() -> str:
    """A message control ID (MSH-10 is at most 20 characters in v2.5.1): unique, never reused."""
    return "LP" + uuid.uuid4().hex[:18].upper()


def results_outbox_add(*, slide_id: int, accession: str, version: int, event: str, render_hl7: RenderHl7,
                       render_fhir: RenderFhir) -> list[OutboxMessage]:
    """Queue the report of slide ``slide_id`` for every active destination. Call it inside the
    transaction that signs (or corrects) the slide: the messages exist exactly when the signature does."""
    if event not in OutboxMessage.Event.values:
        raise ValueError(f"unknown outbox event {event!r}")
    now = timezone.now()
    created = []
    fhir_report = None
    for destination in Destination.objects.filter(active=True).order_by("pk"):
        control_id = control_id_new()
        if destination.kind == Destination.Kind.HL7_MLLP:
            payload = render_hl7(control_id=control_id, created_at=now,
                                 sending_application=destination.sending_application or "LEUKOPORTAL",
                                 sending_facility=destination.sending_facility,
                                 receiving_application=destination.receiving_application,
                                 receiving_facility=destination.receiving_facility)
        else:
            fhir_report = fhir_report if fhir_report is not None else render_fhir()
            payload = json.dumps(fhir_bundle.transaction_bundle(fhir_report, accession=accession, version=version,
                                                                control_id=control_id, timestamp=now.isoformat()))
        created.append(OutboxMessage.objects.create(
            destination=destination, slide_id=slide_id, accession=accession, version=version, event=event,
            control_id=control_id, payload=payload, next_attempt_at=now))
        enqueue_on_commit(DELIVER_TASK, destination.pk)
    return created
