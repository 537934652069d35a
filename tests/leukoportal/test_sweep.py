"""The sweep: the database is the record of work to do; the sweep enqueues again what a lost message
carried, leaves alone what was queued a moment ago, and queues again slides whose worker died."""
from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import AuditEvent, CellImage
from annotations.services import image_upload
from classifier.models import ModelVersion, Prediction, TrainingRun
from classifier.services import training_run_execute
from leukoportal.services import work_sweep
from reports.models import Evaluation
from slides.models import Slide
from tests.factories import ModelVersionFactory
from tests.helpers import png_bytes

LONG_AGO = timedelta(hours=1)


@pytest.fixture
def sweep(django_capture_on_commit_callbacks):
    """Run the sweep and publish its messages (the test's transaction never commits)."""
    def run(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return work_sweep(**kwargs)
    return run


def _slide(user, code, state, heartbeat_ago):
    slide = Slide.objects.create(code=code, created_by=user, task_state=state,
                                 heartbeat_at=timezone.now() - heartbeat_ago if heartbeat_ago is not None else None)
    return slide


def test_slides_queued_long_ago_are_resent_once_per_period_and_recent_ones_left_alone(labeller, broker, sweep):
    lost = _slide(labeller, "Q-1", Slide.TaskState.QUEUED, LONG_AGO)
    recent = _slide(labeller, "Q-2", Slide.TaskState.QUEUED, timedelta(seconds=5))
    done = _slide(labeller, "Q-3", Slide.TaskState.DONE, LONG_AGO)
    assert sweep()["slides_resent"] == 1
    assert broker.messages("inference") == [("slides.tasks.process_slide", [lost.pk])]
    assert Slide.objects.get(pk=lost.pk).task_state == Slide.TaskState.QUEUED
    # the resend moved its heartbeat on: the next sweep, a minute later, does not send it again
    assert sweep()["slides_resent"] == 0
    assert len(broker.messages("inference")) == 1
    assert Slide.objects.get(pk=recent.pk).task_state == Slide.TaskState.QUEUED
    assert Slide.objects.get(pk=done.pk).task_state == Slide.TaskState.DONE


def test_a_running_slide_without_progress_is_queued_again_and_a_live_one_is_not(labeller, broker, sweep):
    stalled = _slide(labeller, "R-1", Slide.TaskState.RUNNING, timedelta(minutes=10))
    never_beat = _slide(labeller, "R-2", Slide.TaskState.RUNNING, None)  # a row from before the heartbeat
    live = _slide(labeller, "R-3", Slide.TaskState.RUNNING, timedelta(seconds=20))
    assert sweep(slide_stale_s=300)["slides_resumed"] == 2
    assert sorted(args[0] for _, args in broker.messages("inference")) == sorted([stalled.pk, never_beat.pk])
    for slide in (stalled, never_beat):
        slide.refresh_from_db()
        assert slide.task_state == Slide.TaskState.QUEUED and slide.progress["resumed"] is True
        assert AuditEvent.objects.filter(action="slide.process_resumed", target_id=str(slide.pk)).exists()
    assert Slide.objects.get(pk=live.pk).task_state == Slide.TaskState.RUNNING
    # queued again a moment ago: neither resumed again nor resent by the next sweep
    result = sweep(slide_stale_s=300)
    assert result["slides_resumed"] == 0 and result["slides_resent"] == 0
    assert len(broker.messages("inference")) == 2


def test_a_second_message_for_a_slide_is_harmless(labeller, broker):
    from slides.services import slide_process

    slide = _slide(labeller, "D-1", Slide.TaskState.QUEUED, LONG_AGO)
    assert slide_process(slide_id=slide.pk) is not None  # the first message claims and processes it
    assert Slide.objects.get(pk=slide.pk).task_state == Slide.TaskState.DONE
    assert slide_process(slide_id=slide.pk) is None  # the duplicate finds nothing queued


def test_training_runs_queued_long_ago_are_resent_and_a_duplicate_is_harmless(lab_admin, broker, sweep):
    lost = TrainingRun.objects.create(created_by=lab_admin)
    TrainingRun.objects.filter(pk=lost.pk).update(created_at=timezone.now() - LONG_AGO)
    recent = TrainingRun.objects.create(created_by=lab_admin)
    assert sweep()["training_runs_resent"] == 1
    assert broker.messages("training") == [("classifier.tasks.train_model_version", [lost.pk])]
    assert sweep()["training_runs_resent"] == 0  # once per period
    # the first delivery claims the run; any later one finds it no longer queued
    TrainingRun.objects.filter(pk=lost.pk).update(status=TrainingRun.Status.RUNNING)
    assert training_run_execute(run_id=lost.pk) is None
    assert TrainingRun.objects.get(pk=recent.pk).status == TrainingRun.Status.QUEUED


def test_a_running_training_without_heartbeat_is_marked_failed(lab_admin, broker, sweep):
    run = TrainingRun.objects.create(created_by=lab_admin, status=TrainingRun.Status.RUNNING,
                                     heartbeat_at=timezone.now() - LONG_AGO)
    live = TrainingRun.objects.create(created_by=lab_admin, status=TrainingRun.Status.RUNNING,
                                      heartbeat_at=timezone.now())
    assert sweep()["training_runs_failed_stale"] == 1
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "worker stopped" in run.error
    assert TrainingRun.objects.get(pk=live.pk).status == TrainingRun.Status.RUNNING


def test_evaluations_queued_long_ago_are_resent(lab_admin, broker, sweep):
    version = ModelVersionFactory(status="candidate")
    lost = Evaluation.objects.create(model_version=version)
    Evaluation.objects.filter(pk=lost.pk).update(created_at=timezone.now() - LONG_AGO)
    Evaluation.objects.create(model_version=version)  # just queued: its message is on its way
    assert sweep()["evaluations_resent"] == 1
    assert broker.messages("inference") == [("reports.tasks.evaluate_model_version", [lost.pk])]


def test_cells_the_active_model_has_not_read_are_resent_after_the_grace_period(labeller, broker, sweep):
    version = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    old, read, recent = (image_upload(data=png_bytes((10 * i, 90, 140)), uploaded_by=labeller,
                                      enqueue_classification=False).image for i in range(3))
    CellImage.objects.filter(pk__in=[old.pk, read.pk]).update(uploaded_at=timezone.now() - LONG_AGO)
    Prediction.objects.create(image=read, model_version=version, label="lymphocyte", top_class="lymphocyte",
                              confidence=0.9, agreement=1, n_backbones=1)
    assert sweep()["images_resent"] == 1
    assert broker.messages("inference") == [("classifier.tasks.classify_images", [[old.pk], version.pk])]


def test_nothing_to_do_sends_nothing(db, broker, sweep):
    assert set(sweep().values()) == {0}
    assert broker.messages("inference") == broker.messages("training") == broker.messages("default") == []


def test_one_failing_step_does_not_stop_the_others(labeller, broker, sweep, monkeypatch):
    import classifier.services

    lost = _slide(labeller, "F-1", Slide.TaskState.QUEUED, LONG_AGO)

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(classifier.services, "training_runs_mark_stale", broken)
    with pytest.raises(RuntimeError, match="training_runs_failed_stale"):
        sweep()
    assert broker.messages("inference") == [("slides.tasks.process_slide", [lost.pk])]


def test_beat_runs_the_sweep_every_minute_in_every_deployment(transactional_db):
    """make run, docker compose and the tests share these settings and django-celery-beat's scheduler:
    when beat starts, the settings' schedule becomes a row of its table."""
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from leukoportal.celery import app

    assert not PeriodicTask.objects.filter(task="leukoportal.tasks.sweep").exists()
    DatabaseScheduler(app=app)
    task = PeriodicTask.objects.get(task="leukoportal.tasks.sweep")
    assert task.enabled and task.interval.every * {"seconds": 1, "minutes": 60}[task.interval.period] == 60
    assert task.expires_ == 60  # a sweep message older than one period is dropped, not run late
    app.loader.import_default_modules()  # what a worker does when it starts: the apps' tasks modules
    assert "leukoportal.tasks.sweep" in app.tasks


def test_the_two_periodic_tasks_the_sweep_replaces_are_removed_by_the_migrations(db):
    from django_celery_beat.models import PeriodicTask

    assert not PeriodicTask.objects.filter(task__startswith="classifier.tasks.").exists()
    assert PeriodicTask.objects.filter(task="reports.tasks.nightly_retrain").exists()  # the editable one stays
