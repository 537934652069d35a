"""Celery adapters: take ids, call a service."""
from celery import shared_task

from . import services


@shared_task(bind=True, acks_late=True, max_retries=3, autoretry_for=(ConnectionError,), retry_backoff=True)
def classify_images(self, image_ids: list[int], model_version_id: int) -> int:
    return services.images_classify(image_ids=image_ids, model_version_id=model_version_id)


@shared_task(bind=True, acks_late=True)
def train_model_version(self, training_run_id: int) -> int | None:
    """The new version's id, or None. Enqueued with ``link=GATE_TASK`` (classifier.services), so the
    worker hands that id on to the promotion gate by task name."""
    version = services.training_run_execute(run_id=training_run_id)
    return version.pk if version is not None else None
