"""Reads of the LIS interface: destinations, the outbox and the order log, a slide's delivery
state, and what a lab admin must see on the home page (failed or long-queued deliveries)."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from .models import Destination, InboundMessage, OrderCode, OutboxMessage

PENDING = (OutboxMessage.State.QUEUED, OutboxMessage.State.SENT)


def destinations_list() -> QuerySet[Destination]:
    return Destination.objects.all()


def order_codes_list() -> QuerySet[OrderCode]:
    return OrderCode.objects.all()


def messages_list(*, state: str | None = None, destination_id: int | None = None, accession: str | None = None,
                  limit: int = 200) -> QuerySet[OutboxMessage]:
    qs = OutboxMessage.objects.select_related("destination").order_by("-id")
    if state:
        qs = qs.filter(state=state)
    if destination_id:
        qs = qs.filter(destination_id=destination_id)
    if accession:
        qs = qs.filter(accession=accession)
    return qs[:limit]


def inbound_list(*, limit: int = 100) -> QuerySet[InboundMessage]:
    return InboundMessage.objects.order_by("-id")[:limit]


def slide_delivery(*, slide_id: int) -> list[OutboxMessage]:
    """The messages of one slide version (one per destination and event), oldest first."""
    return list(OutboxMessage.objects.filter(slide_id=slide_id).select_related("destination").order_by("id"))


def delivery_summary(messages: list[OutboxMessage]) -> str:
    """One word for a slide's delivery: failed, queued, acknowledged (or "" without messages)."""
    states = {m.state for m in messages}
    if not states:
        return ""
    if OutboxMessage.State.FAILED in states:
        return OutboxMessage.State.FAILED
    if states & set(PENDING):
        return OutboxMessage.State.QUEUED
    return OutboxMessage.State.ACKNOWLEDGED


def delivery_alerts(*, now=None) -> dict:
    """Failed messages, and messages still unacknowledged after LIS_QUEUED_ALERT_S seconds."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LIS_QUEUED_ALERT_S)
    failed = OutboxMessage.objects.filter(state=OutboxMessage.State.FAILED).count()
    late = OutboxMessage.objects.filter(state__in=PENDING, created_at__lt=cutoff).count()
    return {"failed": failed, "late": late, "late_after_s": settings.LIS_QUEUED_ALERT_S}
