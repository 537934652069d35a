"""A real Celery worker process on Redis sees a task through end to end."""
from datetime import timedelta

import pytest
from django.utils import timezone

from classifier.models import TrainingRun
from classifier.tasks import mark_stale_training_runs
from tests.conftest import wait_for


@pytest.mark.worker
def test_real_worker_runs_a_task_against_the_database(celery_worker_process):
    run = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING,
                                     heartbeat_at=timezone.now() - timedelta(hours=2))
    mark_stale_training_runs.delay()
    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.FAILED,
             timeout=60, message="the worker to mark the stale run failed")
    assert "worker stopped" in TrainingRun.objects.get(pk=run.pk).error
    assert "mark_stale_training_runs" in celery_worker_process.log_path.read_text()
