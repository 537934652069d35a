"""The nightly retraining schedule (django-celery-beat) and its trigger."""
from django_celery_beat.models import PeriodicTask

from annotations.models import AuditEvent, LabSettings
from classifier.models import TrainingRun
from reports import services
from tests.factories import ModelVersionFactory
from tests.reports import factories


def test_migration_schedules_the_nightly_retraining(db):
    task = PeriodicTask.objects.get(name=services.RETRAIN_TASK_NAME)
    assert task.task == "reports.tasks.nightly_retrain" and task.enabled
    assert (task.crontab.hour, task.crontab.minute) == ("2", "0")
    from leukoportal.celery import app

    app.loader.import_default_modules()
    assert "reports.tasks.nightly_retrain" in app.tasks


def test_lab_admin_edits_the_schedule_on_a_page(client, lab_admin, reviewer):
    client.force_login(reviewer)
    assert client.get("/models/training/schedule/").status_code == 403
    client.force_login(lab_admin)
    page = client.get("/models/training/schedule/")
    assert page.status_code == 200 and b"min_new_labels" in page.content
    response = client.post("/models/training/schedule/", {"hour": 3, "minute": 30, "min_new_labels": 5})
    assert response.status_code == 302
    task = PeriodicTask.objects.get(name=services.RETRAIN_TASK_NAME)
    assert (task.crontab.hour, task.crontab.minute, task.enabled) == ("3", "30", False)
    assert LabSettings.get().retrain_min_new_labels == 5
    event = AuditEvent.objects.get(action="schedule.retrain")
    assert event.actor == lab_admin and event.after["hour"] == 3
    bad = client.post("/models/training/schedule/", {"hour": 25, "minute": 0, "min_new_labels": 5, "enabled": "on"})
    assert bad.status_code == 400
    assert PeriodicTask.objects.get(name=services.RETRAIN_TASK_NAME).crontab.hour == "3"


def test_schedule_api(client, lab_admin, labeller):
    client.force_login(labeller)
    assert client.get("/api/retrain-schedule/").status_code == 403
    client.force_login(lab_admin)
    data = client.get("/api/retrain-schedule/").json()
    assert data["hour"] == "2" and data["enabled"] is True
    out = client.post("/api/retrain-schedule/", {"hour": 4, "minute": 15, "enabled": True, "min_new_labels": 7},
                      content_type="application/json").json()
    assert (out["hour"], out["minute"], out["min_new_labels"]) == ("4", "15", 7)
    bad = client.post("/api/retrain-schedule/", {"hour": 4, "minute": 75, "enabled": True, "min_new_labels": 7},
                      content_type="application/json")
    assert bad.status_code == 400 and "minute" in bad.json()


def test_retraining_starts_only_with_enough_new_labels(db, lab_admin, synthetic, django_capture_on_commit_callbacks):
    train = factories.store_cells(synthetic["train"][:6], split="train", user=lab_admin)
    LabSettings.objects.filter(pk=1).update(retrain_min_new_labels=10)
    assert services.new_final_labels_count() == 6
    assert services.retrain_if_due() is None
    factories.store_cells(synthetic["train"][6:12], split="train", user=lab_admin)
    with django_capture_on_commit_callbacks() as callbacks:
        run = services.retrain_if_due()
    assert run is not None and run.trigger == "schedule" and run.status == TrainingRun.Status.QUEUED
    assert len(callbacks) == 1
    assert services.retrain_if_due() is None  # one run at a time
    # labels already in the newest version's snapshot are not new
    from classifier.models import ModelVersion

    TrainingRun.objects.update(status="succeeded")
    ModelVersionFactory(status="candidate",
                        snapshot={"items": [[i.pk, i.sha256, i.final_label.code] for i in train]})
    assert services.new_final_labels_count() == 6
