"""A real Celery worker process on Redis: when it starts it runs the sweep at once."""
from datetime import timedelta

import pytest
from django.utils import timezone

from classifier.models import TrainingRun
from tests.helpers import wait_for


@pytest.fixture
def run_of_a_dead_worker(transactional_db):
    return TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, heartbeat_at=timezone.now() - timedelta(hours=2))


@pytest.mark.worker
def test_a_worker_that_starts_runs_the_sweep(run_of_a_dead_worker, celery_worker_process):
    run = run_of_a_dead_worker
    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.FAILED,
             timeout=120, message="the sweep of the starting worker to mark the stale run failed")
    assert "worker stopped" in TrainingRun.objects.get(pk=run.pk).error
    assert "leukoportal.tasks.sweep" in celery_worker_process.log_path.read_text()
