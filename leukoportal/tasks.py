"""Celery adapters: take ids, call a service."""
from celery import shared_task

from . import services


@shared_task
def sweep() -> dict[str, int]:
    """Beat (every minute) and every worker start: enqueue again what a lost message carried."""
    return services.work_sweep()
