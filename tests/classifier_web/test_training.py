"""Training from the browser and the API: start, progress, cancel, failure, retry; promotion and rollback."""
import pytest

from annotations.models import AuditEvent
from classifier import services
from classifier.models import ModelVersion, TrainingRun
from tests.factories import ModelVersionFactory
from tests.helpers import png_bytes


@pytest.fixture
def versions(db):
    old = ModelVersionFactory(status="candidate", backbones=["efficientnet_lite0"])
    new = ModelVersionFactory(status="candidate", backbones=["efficientnet_lite0"])
    services.model_version_activate(version=old)
    return old, new


def test_admin_starts_training_in_the_browser_and_polls_progress(client, lab_admin, django_capture_on_commit_callbacks):
    client.force_login(lab_admin)
    page = client.get("/models/training/")
    assert page.status_code == 200 and b"Start training" in page.content and b"Nightly retraining" in page.content
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/models/training/start/", {"ensemble": "offline", "mode": "frozen", "epochs": 3})
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/models/training/{run.pk}/"
    assert (run.ensemble, run.mode, run.epochs, run.trigger) == ("offline", "frozen", 3, "admin")
    assert len(callbacks) == 1
    page = client.get(f"/models/training/{run.pk}/")
    assert b"js/training.js" in page.content and b"<script>" not in page.content
    assert b"Cancel training" in page.content
    progress = client.get(f"/models/training/{run.pk}/progress.json").json()
    assert progress["status"] == "queued" and progress["finished"] is False
    TrainingRun.objects.filter(pk=run.pk).update(status="running", progress={
        "stage": "featurising", "backbone": "efficientnet_lite1", "done": 5, "total": 10})
    progress = client.get(f"/models/training/{run.pk}/progress.json").json()
    assert progress["text"] == "Computing features: efficientnet_lite1 5/10 images"
    assert progress["percent"] == pytest.approx(50 * 1.5 / 3, abs=0.1)
    TrainingRun.objects.filter(pk=run.pk).update(progress={
        "stage": "training", "backbone": "efficientnet_lite0", "epoch": 2, "epochs": 3, "loss": 0.5, "val_accuracy": 0.75})
    progress = client.get(f"/models/training/{run.pk}/progress.json").json()
    assert (progress["epoch"], progress["loss"], progress["val_accuracy"]) == (2, 0.5, 0.75)
    # one run at a time
    again = client.post("/models/training/start/", {"ensemble": "offline", "mode": "default"}, follow=True)
    assert TrainingRun.objects.count() == 1 and b"still running" in again.content
    bad = client.post("/models/training/start/", {"ensemble": "nope", "mode": "default"}, follow=True)
    assert b"Select a valid choice" in bad.content


def test_cancel_and_retry_in_the_browser(client, lab_admin):
    client.force_login(lab_admin)
    run = services.training_run_start(user=lab_admin)
    client.post(f"/models/training/{run.pk}/cancel/")
    run.refresh_from_db()
    assert run.status == "cancelled" and run.cancel_requested
    response = client.post(f"/models/training/{run.pk}/retry/")
    new = TrainingRun.objects.exclude(pk=run.pk).get()
    assert new.retry_of_id == run.pk and response["Location"] == f"/models/training/{new.pk}/"
    # a queued run cannot be retried
    client.post(f"/models/training/{new.pk}/retry/")
    assert TrainingRun.objects.count() == 2


def test_failed_training_keeps_the_active_model_and_can_be_retried(client, lab_admin, versions):
    old, _ = versions
    run = services.training_run_start(user=lab_admin, ensemble="offline", mode="frozen", epochs=1)
    assert services.training_run_execute(run_id=run.pk) is None  # no labelled training cells: fails
    run.refresh_from_db()
    assert run.status == "failed" and "at least two classes" in run.error
    assert ModelVersion.objects.get(status="active") == old
    client.force_login(lab_admin)
    progress = client.get(f"/models/training/{run.pk}/progress.json").json()
    assert progress["stage"] == "failed" and progress["finished"] and "two classes" in progress["error"]
    response = client.post(f"/api/training-runs/{run.pk}/retry/")
    assert response.status_code == 201 and response.json()["retry_of"] == run.pk
    assert client.post(f"/api/training-runs/{response.json()['id']}/retry/").status_code == 409


def test_training_api(client, lab_admin, reviewer):
    client.force_login(reviewer)
    assert client.post("/api/training-runs/start/", {}, content_type="application/json").status_code == 403
    client.force_login(lab_admin)
    bad = client.post("/api/training-runs/start/", {"ensemble": "nope"}, content_type="application/json")
    assert bad.status_code == 400 and "Unknown ensemble" in str(bad.json())
    assert client.post("/api/training-runs/start/", {"epochs": 0}, content_type="application/json").status_code == 400
    ok = client.post("/api/training-runs/start/", {"ensemble": "offline", "mode": "frozen", "epochs": 2},
                     content_type="application/json")
    assert ok.status_code == 201 and ok.json()["status"] == "queued"
    busy = client.post("/api/training-runs/start/", {}, content_type="application/json")
    assert busy.status_code == 409
    run_id = ok.json()["id"]
    assert client.get(f"/api/training-runs/{run_id}/").json()["stage"] == "queued"
    assert client.get("/api/training-runs/").json()["count"] == 1
    cancelled = client.post(f"/api/training-runs/{run_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/training-runs/{run_id}/cancel/").status_code == 409


def test_promotion_and_rollback_need_confirmation_and_a_reason_and_are_audited(client, lab_admin, reviewer, versions):
    old, new = versions
    client.force_login(reviewer)
    assert client.get("/models/").status_code == 200
    assert client.post(f"/models/{new.pk}/promote/", {"confirm": "yes", "reason": "x"}).status_code == 403
    client.force_login(lab_admin)
    page = client.get(f"/models/{new.pk}/promote/")
    assert page.status_code == 200 and b'name="confirm"' in page.content and b'name="reason"' in page.content
    client.post(f"/models/{new.pk}/promote/", {"reason": "better on bands"})
    client.post(f"/models/{new.pk}/promote/", {"confirm": "yes"})
    client.post(f"/models/{new.pk}/promote/", {"confirm": "yes", "reason": "   "})
    new.refresh_from_db()
    assert new.status == "candidate"
    client.post(f"/models/{new.pk}/promote/", {"confirm": "yes", "reason": "better on bands"})
    new.refresh_from_db()
    old.refresh_from_db()
    assert new.status == "active" and old.status == "retired"
    event = AuditEvent.objects.get(action="model.promote")
    assert event.actor == lab_admin and event.target_id == str(new.pk) and event.after["reason"] == "better on bands"
    # going back is the same confirmed step, and its button says what it does
    listing = client.get("/models/")
    assert f"Roll back to v{old.pk}".encode() in listing.content
    confirm = client.get(f"/models/{old.pk}/rollback/")
    assert confirm.status_code == 200 and f"Roll back to v{old.pk}?".encode() in confirm.content
    client.post(f"/models/{old.pk}/rollback/", {"confirm": "yes"})
    old.refresh_from_db()
    assert old.status == "retired"
    client.post(f"/models/{old.pk}/rollback/", {"confirm": "yes", "reason": "new stain batch"})
    old.refresh_from_db()
    assert old.status == "active"
    event = AuditEvent.objects.get(action="model.rollback", actor=lab_admin, target_id=str(old.pk))
    assert event.after["reason"] == "new stain batch"
    # forward again: the newer version's button does not say "roll back"
    listing = client.get("/models/").content.decode()
    assert f"Activate v{new.pk} (newer)" in listing and f"Roll back to v{new.pk}" not in listing


def test_promotion_api(client, lab_admin, versions):
    old, new = versions
    client.force_login(lab_admin)
    assert client.post(f"/api/model-versions/{new.pk}/promote/", {"confirm": False, "reason": "x"},
                       content_type="application/json").status_code == 400
    no_reason = client.post(f"/api/model-versions/{new.pk}/promote/", {"confirm": True}, content_type="application/json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()
    ok = client.post(f"/api/model-versions/{new.pk}/promote/", {"confirm": True, "reason": "better"},
                     content_type="application/json")
    assert ok.status_code == 200 and ok.json()["status"] == "active"
    again = client.post(f"/api/model-versions/{new.pk}/promote/", {"confirm": True, "reason": "better"},
                        content_type="application/json")
    assert again.status_code == 400
    never = ModelVersionFactory(status="candidate")
    body = {"confirm": True, "reason": "back"}
    assert client.post(f"/api/model-versions/{never.pk}/rollback/", body, content_type="application/json").status_code == 400
    assert client.post(f"/api/model-versions/{old.pk}/rollback/", {"confirm": True},
                       content_type="application/json").status_code == 400
    back = client.post(f"/api/model-versions/{old.pk}/rollback/", body, content_type="application/json")
    assert back.status_code == 200 and back.json()["status"] == "active"
    assert client.get("/api/model-versions/").json()["count"] == 3


def test_the_model_version_list_api_reads_the_gate_decisions_in_one_query(client, lab_admin):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reports.models import GateDecision

    client.force_login(lab_admin)

    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as ctx:
            body = client.get("/api/model-versions/").json()
        assert all(v["gate"] and v["gate"]["outcome"] == "candidate" for v in body["results"])
        return len(ctx.captured_queries)

    for _ in range(2):
        v = ModelVersionFactory(status="candidate")
        GateDecision.objects.create(model_version=v, outcome="too_small", reasons=["older"])
        GateDecision.objects.create(model_version=v, outcome="candidate", reasons=["newest"])
    two = queries_for_list()
    for _ in range(5):
        v = ModelVersionFactory(status="candidate")
        GateDecision.objects.create(model_version=v, outcome="candidate", reasons=["newest"])
    assert queries_for_list() == two  # not one more query per version


def test_past_predictions_keep_their_version(lab_admin, versions):
    from annotations.services import image_upload
    from classifier.models import Prediction
    from classifier.services import model_version_promote

    old, new = versions
    image = image_upload(data=png_bytes(), uploaded_by=lab_admin, enqueue_classification=False).image
    p = Prediction.objects.create(image=image, model_version=old, label="lymphocyte", top_class="lymphocyte",
                                  confidence=0.9, agreement=1, n_backbones=1)
    model_version_promote(version=new, actor=lab_admin, reason="test")
    p.refresh_from_db()
    assert p.model_version_id == old.pk


def test_progress_is_not_finished_while_the_run_is_still_being_registered(client, lab_admin):
    """The library says "done" a moment before the run is registered as succeeded; a page that stopped
    polling then would stay at 0% with a Cancel button until reloaded."""
    run = TrainingRun.objects.create(ensemble="offline", status="running", progress={"stage": "done"})
    client.force_login(lab_admin)
    progress = client.get(f"/models/training/{run.pk}/progress.json").json()
    assert progress["finished"] is False and progress["stage"] == "saving" and progress["percent"] == 96.0
    page = client.get(f"/models/training/{run.pk}/").content.decode()
    assert 'class="inline js-retry-form hidden"' in page and 'class="inline js-cancel-form"' in page
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    page = client.get(f"/models/training/{run.pk}/").content.decode()
    assert 'class="inline js-cancel-form hidden"' in page  # no Cancel after success, even without script


def test_a_finished_run_shows_its_loss_and_validation_accuracy(client, lab_admin, active_model):
    """The run's progress ends at "done" without the figures: the page and the JSON take them from
    the version it made (the last epoch it ran, and per backbone the epoch it kept)."""
    from django.utils import timezone
    from pytest_django.asserts import assertInHTML

    run = TrainingRun.objects.create(ensemble="offline", mode="frozen", status="succeeded", created_by=lab_admin,
                                     model_version=active_model, finished_at=timezone.now(),
                                     progress={"stage": "done", "model_version": active_model.pk})
    last = active_model.history[-1]
    backbone = active_model.backbones[0]
    kept_epoch = active_model.metrics["per_backbone"][backbone]["best_epoch"]
    kept = [h for h in active_model.history if h["epoch"] == kept_epoch][-1]
    client.force_login(lab_admin)
    status = client.get(f"/models/training/{run.pk}/progress.json").json()
    assert (status["loss"], status["val_accuracy"]) == (last["loss"], last["val_accuracy"])
    assert (status["epoch"], status["epochs_total"], status["backbone"]) == (last["epoch"], last["epochs"], backbone)
    assert status["result"]["backbones"] == [{"backbone": backbone, "epoch": kept_epoch,
                                              "epochs_run": len(active_model.history), "loss": kept["loss"],
                                              "val_loss": kept["val_loss"], "val_accuracy": kept["val_accuracy"]}]
    assert status["result"]["val_accuracy_vote"] == active_model.metrics["val_accuracy_majority"]
    page = client.get(f"/models/training/{run.pk}/").content.decode()
    assertInHTML(f'<dd class="js-loss">{last["loss"]:.3f}</dd>', page)
    assertInHTML(f'<dd class="js-val">{100 * last["val_accuracy"]:.1f}%</dd>', page)
    assertInHTML(f'<td class="loss">{kept["loss"]:.3f}</td>', page)
    assertInHTML(f'<td class="val">{100 * kept["val_accuracy"]:.1f}%</td>', page)
    assert f'<dd class="threshold"><strong>{active_model.default_threshold:.2f}</strong>' in page
