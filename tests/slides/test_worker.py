"""The processing runs as a real Celery task on the inference queue after the upload commits."""
import pytest

from slides import services
from slides.models import Slide
from tests.conftest import wait_for

from .conftest import field_paths, register_model


@pytest.mark.worker
def test_upload_queues_processing_that_a_real_worker_runs(transactional_db, settings, labeller, tiny_checkpoint,
                                                          celery_worker_process):
    version = register_model(settings, tiny_checkpoint)
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
