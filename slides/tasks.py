"""Celery adapters: take ids, call a service."""
from celery import shared_task

from . import services


@shared_task(bind=True, acks_late=True, queue="inference", max_retries=3, autoretry_for=(ConnectionError,),
             retry_backoff=True)
def process_slide(self, slide_id: int) -> int | None:
    """Detect, crop and classify the cells of a slide (the inference queue: it runs the model)."""
    slide = services.slide_process(slide_id=slide_id)
    return slide.pk if slide else None
