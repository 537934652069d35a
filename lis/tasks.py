"""Celery adapters: take ids, call a service (lis.delivery, lis.services)."""
from celery import shared_task

from . import delivery, services
from .models import Destination

#: One run of a deliverer is bounded by its messages' time-outs; a message is claimed before it is
#: sent, so a worker killed mid-delivery leaves it "sent", and the next deliverer sends it again.
TIME_LIMIT_S = 1800


@shared_task(acks_late=True, time_limit=TIME_LIMIT_S, soft_time_limit=TIME_LIMIT_S - 60)
def deliver(destination_id: int) -> int | None:
    """Deliver what is due for one destination, then schedule this task again for its next retry
    (one scheduled retry per destination at a time). None: another deliverer holds the destination."""
    attempts = delivery.destination_deliver(destination_id=destination_id)
    if attempts is not None:
        wake = services.destination_next_wake(destination_id=destination_id)
        if wake is not None and services.destination_wake_claim(destination_id=destination_id, seconds=wake):
            deliver.apply_async((destination_id,), countdown=max(wake, 0.2))
    return attempts


@shared_task
def deliver_due() -> int:
    """Beat (every 30 s): apply the environment's destination presets, then start a deliverer for each
    destination with a message due (a backstop for a lost or expired message)."""
    services.destinations_preset_from_env()
    due = [d.pk for d in Destination.objects.filter(active=True) if delivery.next_due(destination=d) is not None]
    for pk in due:
        deliver.delay(pk)
    return len(due)
