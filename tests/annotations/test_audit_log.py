"""The audit log: filters by a part of the action, the user, the target and a date range; every
event's before/after read as a list of changed fields (also in each image's history)."""
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from annotations import services
from annotations.audit import audit_record
from annotations.models import AuditEvent
from tests.factories import CellImageFactory, cell_class


def test_field_changes_lists_only_what_changed_in_plain_words():
    from annotations.changes import Change, field_changes, readable

    assert field_changes({"final_label": None, "needs_review": True}, {"final_label": "monocyte", "needs_review": True}) == [
        Change("final label", "—", "monocyte")]
    assert field_changes(None, {"class": "lymphocyte", "unsure": False}) == [
        Change("class", None, "lymphocyte"), Change("unsure", None, "no")]
    assert field_changes({"class": "basophil"}, None) == [Change("class", "basophil", None)]
    assert field_changes({"a": 1}, {"a": 1}) == []
    assert readable([["lab1", "monocyte", False], ["lab2", "lymphocyte", True]]) == "lab1 monocyte no; lab2 lymphocyte yes"
    assert readable({"active": 3}) == "active: 3"


def _event(action, actor, target=("ModelVersion", 1), days_ago=0, **kw):
    event = audit_record(actor=actor, action=action, target=target, **kw)
    AuditEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return event


def _rows(client, **params):
    html = client.get(reverse("annotations:audit_log"), params).content.decode()
    body = html.split('id="audit-events"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return body.count("<tr>"), body


def test_audit_log_filters_by_part_of_action_user_target_and_dates(client, lab_admin, reviewer):
    _event("model.rollback", lab_admin, ("ModelVersion", 2), before={"active": 3}, after={"active": 2})
    _event("model.promote", lab_admin, ("ModelVersion", 3), days_ago=10)
    _event("model.rollback", reviewer, ("ModelVersion", 12), days_ago=3)
    _event("label.create", reviewer, ("CellImage", 2), after={"class": "monocyte"})
    client.force_login(lab_admin)
    assert _rows(client, action="model")[0] == 3
    assert _rows(client, action="rollback")[0] == 2
    assert _rows(client, action="ROLLBACK", user="rev")[0] == 1
    assert _rows(client, target="ModelVersion")[0] == 3
    assert _rows(client, target="2")[0] == 2  # an id matches exactly: 12 is not 2
    assert _rows(client, target="CellImage 2")[0] == 1
    today = timezone.localdate()
    assert _rows(client, action="model", start=today - timedelta(days=5))[0] == 2
    assert _rows(client, action="model", end=today - timedelta(days=5))[0] == 1
    bad = client.get(reverse("annotations:audit_log"), {"start": "2026-02-02", "end": "2026-01-01"})
    assert bad.status_code == 400 and b"start date is after the end date" in bad.content


def test_audit_log_shows_changed_fields_not_python_dicts(client, lab_admin):
    _event("model.rollback", lab_admin, before={"active": 3}, after={"active": 2, "reason": "v3 misreads bands"})
    client.force_login(lab_admin)
    count, body = _rows(client)
    assert count == 1
    assert "{&#x27;" not in body and "{'" not in body
    assert '<span class="field">active</span>: <del>3</del> → <ins>2</ins>' in body
    assert '<span class="field">reason</span>: <ins>v3 misreads bands</ins>' in body


def test_image_history_shows_changed_fields(client, reviewer, labeller, lab_admin):
    image = CellImageFactory(uploaded_by=lab_admin)
    services.label_submit(image=image, labeller=labeller, cell_class=cell_class("monocyte"))
    client.force_login(reviewer)
    html = client.get(reverse("annotations:image_detail", args=[image.pk])).content.decode()
    history = html.split('class="history"')[1]
    assert "{&#x27;" not in history and "{'" not in history
    assert '<span class="field">final label</span>: <del>—</del> → <ins>monocyte</ins>' in history
    assert '<span class="field">class</span>: <ins>monocyte</ins>' in history


def test_an_action_that_is_not_an_audit_action_is_refused_before_anything_is_written(db, lab_admin):
    import pytest

    from annotations.models import AuditAction

    with pytest.raises(ValueError):
        audit_record(actor=lab_admin, action="model.retrained_by_magic", target=("ModelVersion", 1))
    assert not AuditEvent.objects.exists()
    event = audit_record(actor=lab_admin, action="model.promote", target=("ModelVersion", 1))
    assert event.action == AuditAction.MODEL_PROMOTE == "model.promote"
    assert AuditEvent.objects.get().action == "model.promote"
