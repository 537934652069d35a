"""Writes of the LIS interface: destinations (lab admins, audited), sending a message again (audited),
the environment's presets, and the orders the listener receives (pending slides, cancels).

This module sits above the apps (.importlinter): it creates slides through slides.services.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlparse

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.audit import audit_record
from annotations.models import AuditAction
from leukoportal.queueing import enqueue_on_commit
from leukoportal.roles import LAB_ADMIN, has_role
from slides import services as slide_services
from slides.models import Slide

from . import delivery, orders
from .models import Destination, InboundMessage, OrderCode, OutboxMessage
from .outbox import DELIVER_TASK, control_id_new

log = logging.getLogger(__name__)

#: The user an order from the LIS creates its slide as (no password, cannot log in).
LIS_USERNAME = "lis-interface"
DESTINATION_FIELDS = ("name", "kind", "active", "host", "port", "tls", "sending_application", "sending_facility",
                      "receiving_application", "receiving_facility", "base_url", "bearer_token", "timeout_s",
                      "max_attempts", "backoff_s", "backoff_max_s")
SECRET_FIELDS = {"bearer_token"}
MAX_WBC = Decimal(1000)


# --- Destinations --------------------------------------------------------------------------
def _check_actor(actor) -> None:
    if not has_role(actor, LAB_ADMIN):
        raise PermissionDenied("Only a lab admin sets the LIS destinations.")


def _audit_view(values: dict) -> dict:
    """A destination's values for the audit trail: the bearer token only as set / not set."""
    return {k: (bool(v) if k in SECRET_FIELDS else v) for k, v in values.items()}


def _clean_destination(values: dict, *, exclude_pk: int | None = None) -> dict:
    errors = {}
    name = " ".join((values.get("name") or "").split())
    if not name:
        errors["name"] = "Name the destination (e.g. the LIS and its interface)."
    elif Destination.objects.filter(name__iexact=name).exclude(pk=exclude_pk).exists():
        errors["name"] = f"A destination named {name!r} exists already."
    values["name"] = name
    kind = values.get("kind")
    if kind not in Destination.Kind.values:
        errors["kind"] = f"Choose one of {', '.join(Destination.Kind.values)}."
    if kind == Destination.Kind.HL7_MLLP:
        values["host"] = (values.get("host") or "").strip()
        if not values["host"]:
            errors["host"] = "The LIS's host name or address is required for MLLP."
        port = values.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            errors["port"] = "The MLLP port must be between 1 and 65535."
        for field in ("sending_application", "sending_facility", "receiving_application", "receiving_facility"):
            value = (values.get(field) or "").strip()
            if len(value) > 20:
                errors[field] = "At most 20 characters (HL7 v2.5.1 HD.1)."
            values[field] = value
        values["sending_application"] = values["sending_application"] or "LEUKOPORTAL"
    elif kind == Destination.Kind.FHIR:
        url = (values.get("base_url") or "").strip()
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors["base_url"] = "The FHIR server's base URL (http:// or https://) is required."
        values["base_url"] = url
    for field, low in (("timeout_s", 0.1), ("backoff_s", 0.1), ("backoff_max_s", 0.1)):
        if field in values and (values[field] is None or float(values[field]) < low):
            errors[field] = f"At least {low} s."
    if "max_attempts" in values and (values["max_attempts"] is None or int(values["max_attempts"]) < 1):
        errors["max_attempts"] = "At least one attempt."
    if errors:
        raise ValidationError(errors)
    return values


def destination_create(*, actor, **values) -> Destination:
    _check_actor(actor)
    values = {k: v for k, v in values.items() if k in DESTINATION_FIELDS and v is not None}
    values.setdefault("timeout_s", settings.LIS_TIMEOUT_S)
    values.setdefault("max_attempts", settings.LIS_MAX_ATTEMPTS)
    values.setdefault("backoff_s", settings.LIS_BACKOFF_S)
    values.setdefault("backoff_max_s", settings.LIS_BACKOFF_MAX_S)
    values = _clean_destination(values)
    with transaction.atomic():
        destination = Destination.objects.create(**values)
        audit_record(actor=actor, action=AuditAction.LIS_DESTINATION_CREATE, target=destination,
                     after=_audit_view(values))
    return destination


def destination_update(*, actor, destination: Destination, **changes) -> Destination:
    """Change a destination; fields left out (None) stay. A bearer token left blank stays as it was."""
    _check_actor(actor)
    with transaction.atomic():
        destination = Destination.objects.select_for_update().get(pk=destination.pk)
        before = {f: getattr(destination, f) for f in DESTINATION_FIELDS}
        values = dict(before)
        values.update({k: v for k, v in changes.items() if k in DESTINATION_FIELDS and v is not None})
        if changes.get("bearer_token") == "":
            values["bearer_token"] = before["bearer_token"]
        values = _clean_destination(values, exclude_pk=destination.pk)
        for field, value in values.items():
            setattr(destination, field, value)
        destination.save()
        changed = {k: v for k, v in values.items() if before[k] != v}
        audit_record(actor=actor, action=AuditAction.LIS_DESTINATION_UPDATE, target=destination,
                     before=_audit_view({k: before[k] for k in changed}), after=_audit_view(changed))
        if destination.active:
            enqueue_on_commit(DELIVER_TASK, destination.pk)
    return destination


def destinations_preset_from_env() -> list[Destination]:
    """Make or update the destinations the environment presets (LIS_MLLP_HOST/PORT, LIS_FHIR_BASE_URL,
    ...); audited as a system change when something changed."""
    presets = []
    if settings.LIS_MLLP_HOST and settings.LIS_MLLP_PORT:
        presets.append({"name": "LIS (MLLP, from the environment)", "kind": Destination.Kind.HL7_MLLP,
                        "host": settings.LIS_MLLP_HOST, "port": settings.LIS_MLLP_PORT, "tls": settings.LIS_MLLP_TLS,
                        "sending_application": settings.LIS_SENDING_APPLICATION,
                        "sending_facility": settings.LIS_SENDING_FACILITY,
                        "receiving_application": settings.LIS_RECEIVING_APPLICATION,
                        "receiving_facility": settings.LIS_RECEIVING_FACILITY})
    if settings.LIS_FHIR_BASE_URL:
        presets.append({"name": "LIS (FHIR, from the environment)", "kind": Destination.Kind.FHIR,
                        "base_url": settings.LIS_FHIR_BASE_URL, "bearer_token": settings.LIS_FHIR_TOKEN})
    out = []
    for values in presets:
        with transaction.atomic():
            destination = Destination.objects.select_for_update().filter(name=values["name"]).first()
            if destination is None:
                values = _clean_destination(dict(values, timeout_s=settings.LIS_TIMEOUT_S,
                                                 max_attempts=settings.LIS_MAX_ATTEMPTS,
                                                 backoff_s=settings.LIS_BACKOFF_S,
                                                 backoff_max_s=settings.LIS_BACKOFF_MAX_S))
                destination = Destination.objects.create(preset=True, **values)
                audit_record(actor=None, action=AuditAction.LIS_DESTINATION_CREATE, target=destination,
                             after=_audit_view(values))
            else:
                changed = {k: v for k, v in values.items() if getattr(destination, k) != v}
                if changed:
                    before = {k: getattr(destination, k) for k in changed}
                    for k, v in changed.items():
                        setattr(destination, k, v)
                    destination.save()
                    audit_record(actor=None, action=AuditAction.LIS_DESTINATION_UPDATE, target=destination,
                                 before=_audit_view(before), after=_audit_view(changed))
        out.append(destination)
    return out


# --- Delivery ------------------------------------------------------------------------------
def destination_next_wake(*, destination_id: int) -> float | None:
    destination = Destination.objects.filter(pk=destination_id, active=True).first()
    return delivery.next_wake(destination=destination) if destination is not None else None


def destination_wake_claim(*, destination_id: int, seconds: float) -> bool:
    """True when no retry of this destination is scheduled at or before ``seconds`` from now (the
    caller then schedules one): one scheduled retry per destination, not one per message."""
    key = f"lis:wake:{destination_id}"
    at = timezone.now().timestamp() + seconds
    scheduled = cache.get(key)
    if scheduled is not None and timezone.now().timestamp() < scheduled <= at + 0.5:
        return False  # a retry still to come runs soon enough
    cache.set(key, at, timeout=max(int(seconds) + 1, 1))
    return True


def message_resend(*, actor, message: OutboxMessage) -> OutboxMessage:
    """Send a failed message again (lab admins, audited), once its cause is fixed: the same content
    under a new control ID (the LIS answered the old one), queued now; its slide's later messages
    follow in order. Only a failed message: an acknowledged one is never sent again as a new message,
    and a queued one goes by itself."""
    _check_actor(actor)
    with transaction.atomic():
        message = OutboxMessage.objects.select_for_update().select_related("destination").get(pk=message.pk)
        if message.state != OutboxMessage.State.FAILED:
            raise ValidationError(f"Only a failed message is sent again; this one is {message.state}.")
        before = {"state": message.state, "attempts": message.attempts, "control_id": message.control_id,
                  "error": message.error[:500]}
        new_id = control_id_new()
        message.payload = _payload_with_control_id(message, new_id)
        message.control_id = new_id
        message.state = OutboxMessage.State.QUEUED
        message.attempts = 0
        message.next_attempt_at = timezone.now()
        message.error = ""
        message.save(update_fields=["payload", "control_id", "state", "attempts", "next_attempt_at", "error"])
        audit_record(actor=actor, action=AuditAction.LIS_RESEND, target=message, before=before,
                     after={"state": message.state, "control_id": new_id})
        enqueue_on_commit(DELIVER_TASK, message.destination_id)
    return message


def _payload_with_control_id(message: OutboxMessage, control_id: str) -> str:
    """The payload under a new control ID (MSH-10; the Bundle's id and identifier)."""
    if message.destination.kind == Destination.Kind.HL7_MLLP:
        segments = message.payload.split("\r")
        fields = segments[0].split("|")
        fields[9] = control_id
        segments[0] = "|".join(fields)
        return "\r".join(segments)
    bundle = json.loads(message.payload)
    bundle["id"] = control_id
    bundle["identifier"]["value"] = control_id
    return json.dumps(bundle)


# --- Inbound orders ------------------------------------------------------------------------
def _lis_user():
    user, created = get_user_model().objects.get_or_create(username=LIS_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _order_code_known(code: str, system: str) -> bool:
    codes = OrderCode.objects.filter(active=True, code__iexact=code)
    return codes.filter(coding_system="").exists() or (bool(system) and codes.filter(coding_system__iexact=system).exists())


def _aware(value: datetime | None) -> datetime | None:
    if value is None or timezone.is_aware(value):
        return value
    return timezone.make_aware(value)


def _order_apply(order: orders.Order) -> tuple[Slide | None, str]:
    """Create or cancel the pending slide (inside the caller's transaction); (slide, note)."""
    user = _lis_user()
    if order.order_control == orders.CANCEL:
        slide = Slide.objects.select_for_update().filter(code=order.accession).order_by("version").first()
        if slide is None:
            raise orders.OrderRefused("AE", orders.ERR_TABLE_VALUE, f"No order {order.accession} to cancel.")
        if slide.fields.exists() or slide.cells.exists() or slide.version > 1 or slide.status == Slide.Status.SIGNED:
            raise orders.OrderRefused("AR", orders.ERR_INTERNAL,
                                      f"Order {order.accession} has images already; it cannot be cancelled here.")
        audit_record(actor=None, action=AuditAction.LIS_ORDER_CANCEL, target=slide,
                     before={"code": slide.code, "status": slide.status}, after={"deleted": True})
        slide.delete()
        return None, "cancelled"
    if not _order_code_known(order.code, order.coding_system):
        raise orders.OrderRefused("AE", orders.ERR_TABLE_VALUE,
                                  f"Unknown order code {order.code}^{order.coding_system}: not mapped to the "
                                  "blood film differential.")
    if Slide.objects.filter(code=order.accession).exists():
        raise orders.OrderRefused("AE", orders.ERR_INTERNAL, f"A slide with accession {order.accession} exists already.")
    collected = _aware(order.collected_at)
    notes = (f"Ordered by the LIS: blood film differential ({order.code})"
             + (f"; collected {timezone.localtime(collected):%Y-%m-%d %H:%M}" if collected else "") + ".")
    try:
        slide = slide_services.slide_create(code=order.accession, created_by=user, wbc_count=order.wbc_count,
                                            notes=notes)
    except ValidationError as exc:
        raise orders.OrderRefused("AE", orders.ERR_TABLE_VALUE, " ".join(exc.messages)) from None
    audit_record(actor=None, action=AuditAction.LIS_ORDER_RECEIVE, target=slide,
                 after={"order_code": order.code, "collected_at": collected.isoformat() if collected else None,
                        "wbc_count": str(order.wbc_count) if order.wbc_count is not None else None})
    return slide, "created"


def order_message_receive(*, text: str) -> str:
    """Answer one order message (the listener's work): its ACK's text. The same message (sender and
    control ID) again gets the same ACK and changes nothing; a refused order changes nothing."""
    now = timezone.now()
    ack_id = control_id_new()
    try:
        msg, header = orders.parse(text)
    except orders.OrderRefused as refused:
        return orders.ack(header=None, code=refused.ack_code, created_at=now, control_id=ack_id,
                          error=refused.error, text=refused.text)
    key = {"sending_application": header.sending_application[:60], "sending_facility": header.sending_facility[:60],
           "control_id": header.control_id[:60]}
    if header.control_id:
        seen = InboundMessage.objects.filter(**key).first()
        if seen is not None:
            return seen.ack
    record = InboundMessage(message_type=header.message_type[:20], **key)
    try:
        order = orders.order_read(msg, header)
        record.order_control, record.accession = order.order_control, order.accession[:40]
        record.order_code = f"{order.code}^{order.coding_system}"[:60]
        record.collected_at = _aware(order.collected_at)
        record.wbc_count = order.wbc_count if order.wbc_count is not None and 0 < order.wbc_count <= MAX_WBC else None
        with transaction.atomic():
            slide, _ = _order_apply(order)
            record.slide = slide
            record.ack_code = "AA"
            record.ack = orders.ack(header=header, code="AA", created_at=now, control_id=ack_id)
            if header.control_id:
                record.save()
    except orders.OrderRefused as refused:
        record.ack_code, record.error = refused.ack_code, refused.text
        record.ack = orders.ack(header=header, code=refused.ack_code, created_at=now, control_id=ack_id,
                                error=refused.error, text=refused.text)
        record.slide = None
        if header.control_id:
            try:
                with transaction.atomic():
                    record.save()
            except IntegrityError:  # the same message, answered a moment ago by another connection
                pass
    except IntegrityError:  # the same message, answered a moment ago by another connection
        seen = InboundMessage.objects.filter(**key).first()
        return seen.ack if seen is not None else orders.ack(header=header, code="AE", created_at=now,
                                                            control_id=ack_id, error=orders.ERR_INTERNAL,
                                                            text="Try again.")
    log.info("LIS order %s %s -> %s %s", header.control_id, record.accession, record.ack_code, record.error)
    return record.ack
