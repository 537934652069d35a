"""Delivery of the outbox: one destination at a time, oldest message first, a slide's messages in
the order they were written (a correction never overtakes its original).

* One deliverer per destination (a lock in the cache, renewed per message); a second task for the
  same destination returns at once, the running one picks up what was added meanwhile.
* A message is claimed (queued -> sent, attempts + 1) before it goes on the wire. A message found
  "sent" by the lock's holder was left by a worker that died mid-delivery: it is sent again with the
  same control ID (the LIS recognises a repeat; it is never a new result).
* HL7: AA (or CA) -> acknowledged; AR (CR) -> failed, with the LIS's error text; AE (CE), no answer,
  an answer for another control ID -> retried after a bounded, doubling wait; after the destination's
  ``max_attempts`` -> failed. FHIR: 2xx -> acknowledged; 4xx -> failed with the OperationOutcome;
  5xx and time-outs -> retried as above.
* While the LIS cannot be reached at all, delivery to that destination pauses (nothing else is tried
  until the oldest message's retry is due), so messages go out in the order they were signed.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.core.cache import cache
from django.db.models import F
from django.utils import timezone

from . import transport
from .models import Destination, OutboxMessage

log = logging.getLogger(__name__)

ACCEPTED = {"AA", "CA"}
REJECTED = {"AR", "CR"}
#: Blocks the next message of the same slide: a message not yet acknowledged.
UNFINISHED = (OutboxMessage.State.QUEUED, OutboxMessage.State.SENT, OutboxMessage.State.FAILED)


@dataclass(frozen=True)
class Outcome:
    state: str
    answer_code: str = ""
    answer: str = ""
    error: str = ""
    pause: bool = False  # the destination is unreachable: try nothing else now


def _lock_key(destination_id: int) -> str:
    return f"lis:deliver:{destination_id}"


def _lock_ttl(destination: Destination) -> int:
    return int(2 * destination.timeout_s) + 5  # one attempt: connect, then wait for the answer


def _heads(destination: Destination):
    """The first unfinished message of each slide, oldest first (the only ones that may go)."""
    seen: set[str] = set()
    for message in OutboxMessage.objects.filter(destination=destination, state__in=UNFINISHED).order_by("pk"):
        if message.accession not in seen:
            seen.add(message.accession)
            yield message


def next_due(*, destination: Destination, now=None) -> OutboxMessage | None:
    """The oldest message that may go now: the first unfinished message of its slide, due (or left
    "sent" by a dead worker)."""
    now = now or timezone.now()
    if destination.paused_until is not None and destination.paused_until > now:
        return None
    for message in _heads(destination):
        if message.state == OutboxMessage.State.SENT:
            return message
        if message.state == OutboxMessage.State.QUEUED and message.next_attempt_at <= now:
            return message
    return None


def next_wake(*, destination: Destination) -> float | None:
    """Seconds until a message of this destination may go (0: now), or None (nothing waits but
    messages held behind a failed one)."""
    times = [m.next_attempt_at for m in _heads(destination) if m.state == OutboxMessage.State.QUEUED]
    if not times:
        return None
    first = max([min(times)] + ([destination.paused_until] if destination.paused_until else []))
    return max((first - timezone.now()).total_seconds(), 0.0)


def _hl7_attempt(destination: Destination, message: OutboxMessage) -> Outcome:
    try:
        answer = transport.mllp_send(host=destination.host, port=destination.port, payload=message.payload,
                                     timeout=destination.timeout_s, tls=destination.tls)
    except transport.Unreachable as exc:
        return Outcome(OutboxMessage.State.QUEUED, error=str(exc), pause=True)
    except transport.NoAnswer as exc:
        return Outcome(OutboxMessage.State.QUEUED, error=str(exc))
    try:
        ack = transport.ack_parse(answer)
    except ValueError as exc:
        return Outcome(OutboxMessage.State.QUEUED, answer=answer, error=str(exc))
    if ack.control_id != message.control_id:
        return Outcome(OutboxMessage.State.QUEUED, answer_code=ack.code, answer=answer,
                       error=f"the ACK names control ID {ack.control_id!r}, not {message.control_id!r}")
    if ack.code in ACCEPTED:
        return Outcome(OutboxMessage.State.ACKNOWLEDGED, answer_code=ack.code, answer=answer)
    if ack.code in REJECTED:
        return Outcome(OutboxMessage.State.FAILED, answer_code=ack.code, answer=answer,
                       error=f"rejected by the LIS ({ack.code}): {ack.text or 'no reason given'}")
    return Outcome(OutboxMessage.State.QUEUED, answer_code=ack.code, answer=answer,
                   error=f"the LIS answered {ack.code or 'no code'}: {ack.text or 'no reason given'}")


def _fhir_attempt(destination: Destination, message: OutboxMessage) -> Outcome:
    try:
        answer = transport.fhir_post(base_url=destination.base_url, token=destination.bearer_token,
                                     bundle=message.payload, timeout=destination.timeout_s)
    except transport.Unreachable as exc:
        return Outcome(OutboxMessage.State.QUEUED, error=str(exc), pause=True)
    except transport.NoAnswer as exc:
        return Outcome(OutboxMessage.State.QUEUED, error=str(exc))
    code = str(answer.status)
    if 200 <= answer.status < 300:
        return Outcome(OutboxMessage.State.ACKNOWLEDGED, answer_code=code, answer=answer.body[:20000])
    text = transport.operation_outcome_text(answer.body)
    if 400 <= answer.status < 500:
        return Outcome(OutboxMessage.State.FAILED, answer_code=code, answer=answer.body[:20000],
                       error=f"refused by the FHIR server (HTTP {code}): {text}")
    return Outcome(OutboxMessage.State.QUEUED, answer_code=code, answer=answer.body[:20000],
                   error=f"the FHIR server answered HTTP {code}: {text}")


def message_attempt(*, message: OutboxMessage) -> Outcome:
    """Send one claimed message and record the outcome on it."""
    destination = message.destination
    attempt = _hl7_attempt if destination.kind == Destination.Kind.HL7_MLLP else _fhir_attempt
    outcome = attempt(destination, message)
    now = timezone.now()
    fields = {"answer_code": outcome.answer_code, "answer": outcome.answer, "error": outcome.error}
    if outcome.state == OutboxMessage.State.ACKNOWLEDGED:
        fields.update(state=outcome.state, acknowledged_at=now, error="")
    elif outcome.state == OutboxMessage.State.FAILED:
        fields.update(state=outcome.state)
    elif message.attempts >= destination.max_attempts:
        fields.update(state=OutboxMessage.State.FAILED,
                      error=f"gave up after {message.attempts} attempts; last: {outcome.error}")
    else:
        fields.update(state=OutboxMessage.State.QUEUED,
                      next_attempt_at=now + timedelta(seconds=destination.backoff(message.attempts)))
    OutboxMessage.objects.filter(pk=message.pk).update(**fields)
    # An unreachable LIS pauses the whole destination until this message's retry: the messages behind it
    # (other slides' too) wait, so they reach the LIS in the order they were signed.
    paused = fields.get("next_attempt_at") if outcome.pause else None
    if destination.paused_until != paused:
        Destination.objects.filter(pk=destination.pk).update(paused_until=paused)
        destination.paused_until = paused
    log.info("LIS message %s to %s: attempt %d -> %s %s", message.control_id, destination, message.attempts,
             fields["state"], outcome.error)
    return outcome


def _claim(message: OutboxMessage) -> OutboxMessage | None:
    now = timezone.now()
    claimed = OutboxMessage.objects.filter(pk=message.pk, state=message.state).update(
        state=OutboxMessage.State.SENT, attempts=F("attempts") + 1, last_attempt_at=now)
    if not claimed:
        return None
    return OutboxMessage.objects.select_related("destination").get(pk=message.pk)


def destination_deliver(*, destination_id: int, limit: int = 50) -> int | None:
    """Deliver what is due for one destination, at most ``limit`` attempts (the task then schedules
    itself again at once: one run stays well inside its time limit); the number of attempts made.
    None at once when another deliverer holds the destination (or it is inactive)."""
    destination = Destination.objects.filter(pk=destination_id, active=True).first()
    if destination is None:
        return None
    key, token = _lock_key(destination_id), uuid.uuid4().hex
    if not cache.add(key, token, timeout=_lock_ttl(destination)):
        return None
    attempts = 0
    try:
        while attempts < limit:
            message = next_due(destination=destination)
            if message is None:
                break
            message = _claim(message)
            if message is None:
                continue
            cache.touch(key, _lock_ttl(destination))
            attempts += 1
            message.destination = destination
            if message_attempt(message=message).pause:
                break
    finally:
        if cache.get(key) == token:
            cache.delete(key)
    return attempts
