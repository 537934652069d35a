"""Celery adapters: take ids, call a service."""
from celery import shared_task

from . import services


@shared_task(bind=True, acks_late=True)
def evaluate_model_version(self, evaluation_id: int) -> int | None:
    evaluation = services.evaluation_execute(evaluation_id=evaluation_id)
    return evaluation.pk if evaluation else None


@shared_task(bind=True, acks_late=True)
def gate_model_version(self, model_version_id: int | None) -> int | None:
    """Linked after ``classifier.tasks.train_model_version``: its result (the new version's id, or None
    when the run made no version) is evaluated on the held-out cells and gated."""
    if model_version_id is None:
        return None
    decision = services.model_version_evaluate_and_gate(model_version_id=model_version_id)
    return decision.pk if decision else None


@shared_task
def nightly_retrain() -> int | None:
    """Beat (django-celery-beat, editable on the training page): retrain when enough new labels exist."""
    run = services.retrain_if_due()
    return run.pk if run else None
