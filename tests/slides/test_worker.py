"""The processing runs as a real Celery task on the inference queue after the upload commits, and a
slide whose message was lost is processed once a worker starts (its sweep)."""
from datetime import timedelta

import pytest
from django.utils import timezone

from slides import services
from slides.models import Slide
from tests.factories import TrainedModelVersionFactory
from tests.helpers import field_paths, wait_for


@pytest.mark.worker
def test_upload_queues_processing_that_a_real_worker_runs(transactional_db, labeller, slides_checkpoint,
                                                          celery_worker_process):
    version = TrainedModelVersionFactory(result=slides_checkpoint, activate=True)
    slide = services.slide_create(code="W-1", created_by=labeller)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)

    def done():
        s = Slide.objects.get(pk=slide.pk)
        return s if s.task_state in (Slide.TaskState.DONE, Slide.TaskState.FAILED) else None

    s = wait_for(done, timeout=120, message="the worker to process the slide")
    assert s.task_state == Slide.TaskState.DONE, s.error + celery_worker_process.log_path.read_text()[-3000:]
    assert s.status == Slide.Status.READY and s.model_version_id == version.pk
    assert s.cells.exclude(predicted_class="").count() == s.cells.count() > 0
    assert "slides.tasks.process_slide" in celery_worker_process.log_path.read_text()


@pytest.fixture
def slide_whose_message_was_lost(transactional_db, labeller, slides_checkpoint, broker):
    TrainedModelVersionFactory(result=slides_checkpoint, activate=True)
    slide = services.slide_create(code="W-2", created_by=labeller)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    broker.empty()  # the broker lost the message ...
    Slide.objects.filter(pk=slide.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))  # ... an hour ago
    return slide


@pytest.mark.worker
def test_a_slide_whose_message_was_lost_is_processed_when_a_worker_starts(slide_whose_message_was_lost,
                                                                           celery_worker_process):
    slide = slide_whose_message_was_lost

    def done():
        s = Slide.objects.get(pk=slide.pk)
        return s if s.task_state in (Slide.TaskState.DONE, Slide.TaskState.FAILED) else None

    s = wait_for(done, timeout=180, message="the starting worker's sweep to have the slide processed")
    assert s.task_state == Slide.TaskState.DONE, s.error + celery_worker_process.log_path.read_text()[-3000:]
    assert s.cells.count() > 0 and s.cells.filter(predicted_class="").count() == 0
    log = celery_worker_process.log_path.read_text()
    assert "leukoportal.tasks.sweep" in log and "slides.tasks.process_slide" in log
