"""What other apps may ask of the classifier: "classify these cells", after the commit, by task name.

It depends on classifier's selectors and ``leukoportal.queueing`` only, so annotations (uploads,
imports) ask for classification without importing classifier's services.
"""
from __future__ import annotations

from django.conf import settings

from leukoportal.queueing import enqueue_on_commit

from .models import ModelVersion
from .selectors import model_version_active


def classification_enqueue_on_commit(*, image_ids: list[int], model_version: ModelVersion | None = None) -> bool:
    """After the current transaction commits, classify these images with the active model."""
    if not image_ids:
        return False
    if model_version is None:
        if not settings.AUTO_CLASSIFY_UPLOADS:
            return False
        model_version = model_version_active()
        if model_version is None:
            return False
    enqueue_on_commit("classifier.tasks.classify_images", list(image_ids), model_version.pk)
    return True
