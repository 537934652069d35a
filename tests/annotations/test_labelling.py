"""Queues, blind double reading, suggestions, undo, settings, thumbnails and the portal pages."""
import re
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from annotations import selectors, services
from annotations.models import AuditEvent, Label, LabSettings
from tests.factories import CellImageFactory, PredictionFactory, UserFactory, cell_class


def queue_ids(user, queue):
    return list(selectors.labelling_queue(user=user, queue=queue).values_list("id", flat=True))


def set_lab(**kw):
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(**kw)


# --- Queues and blind double reading ---------------------------------------------------------
def test_unlabelled_queue_drops_a_cell_once_read_by_me_but_keeps_it_for_a_second_reader(labeller, labeller2):
    set_lab(labels_required_train=2)
    a, b = CellImageFactory.create_batch(2, uploaded_by=labeller)
    services.label_submit(image=a, labeller=labeller, cell_class=cell_class("monocyte"))
    assert queue_ids(labeller, "unlabelled") == [b.pk]
    assert queue_ids(labeller2, "unlabelled") == [a.pk, b.pk]
    services.label_submit(image=a, labeller=labeller2, cell_class=cell_class("monocyte"))
    a.refresh_from_db()
    assert a.final_label.code == "monocyte"
    assert a.pk not in queue_ids(labeller2, "unlabelled")


def test_one_reading_is_enough_for_training_by_default(labeller, labeller2):
    a = CellImageFactory(uploaded_by=labeller)
    services.label_submit(image=a, labeller=labeller, cell_class=cell_class("eosinophil"))
    assert queue_ids(labeller2, "unlabelled") == []


def test_heldout_queue_needs_two_readers_and_is_separate(labeller, labeller2, lab_admin):
    train = CellImageFactory(uploaded_by=lab_admin)
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    assert queue_ids(labeller, "heldout") == [held.pk]
    assert queue_ids(labeller, "unlabelled") == [train.pk]
    services.label_submit(image=held, labeller=labeller, cell_class=cell_class("lymphocyte"))
    assert queue_ids(labeller2, "heldout") == [held.pk]
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("monocyte"))
    held.refresh_from_db()
    assert held.needs_review and held.final_label is None
    assert queue_ids(labeller, "heldout") == [] and queue_ids(labeller2, "heldout") == []
    assert list(selectors.adjudication_queue()) == [held]


def test_prelabelled_queue_is_least_confident_first_and_blind_on_heldout(labeller, lab_admin, active_model_row):
    a, b, c = CellImageFactory.create_batch(3, uploaded_by=lab_admin)
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    unpredicted = CellImageFactory(uploaded_by=lab_admin)
    PredictionFactory(image=a, model_version=active_model_row, top_class="lymphocyte", confidence=0.9)
    PredictionFactory(image=b, model_version=active_model_row, top_class="monocyte", confidence=0.4)
    PredictionFactory(image=c, model_version=active_model_row, top_class="monocyte", confidence=0.6, abstained=True)
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.1)
    assert queue_ids(labeller, "prelabelled") == [b.pk, c.pk, a.pk]
    set_lab(blind_heldout=False)
    assert queue_ids(labeller, "prelabelled") == [held.pk, b.pk, c.pk, a.pk]
    assert unpredicted.pk not in queue_ids(labeller, "prelabelled")


def test_prelabelled_queue_is_empty_without_an_active_model(labeller, lab_admin):
    CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    assert queue_ids(labeller, "prelabelled") == []


def test_unsure_queue_shows_cells_others_flagged_not_mine(labeller, labeller2, lab_admin):
    a, b = CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    services.label_submit(image=a, labeller=labeller, cell_class=cell_class("basophil"), unsure=True)
    assert queue_ids(labeller2, "unsure") == [a.pk]
    assert queue_ids(labeller, "unsure") == []
    assert selectors.labelling_queue_counts(user=labeller2) == {"unlabelled": 1, "prelabelled": 0, "unsure": 1, "heldout": 0}


# --- Suggestions ------------------------------------------------------------------------------
def test_label_records_whether_it_confirmed_or_changed_the_model_suggestion(labeller, labeller2, lab_admin, active_model_row):
    a, b = CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    PredictionFactory(image=a, model_version=active_model_row, top_class="monocyte", confidence=0.7)
    PredictionFactory(image=b, model_version=active_model_row, top_class="monocyte", confidence=0.3, abstained=True)
    confirmed = services.label_submit_as_offered(image=a, labeller=labeller, cell_class=cell_class("monocyte"))
    changed = services.label_submit_as_offered(image=b, labeller=labeller, cell_class=cell_class("lymphocyte"))
    assert confirmed.confirmed_suggestion is True and confirmed.suggestion_model_version == active_model_row
    assert changed.confirmed_suggestion is False and changed.suggested_class.code == "monocyte"
    event = AuditEvent.objects.filter(action="label.create", target_id=str(b.pk)).get()
    assert event.after["suggested"] == "monocyte" and event.after["model_version"] == active_model_row.pk


def test_no_suggestion_is_offered_or_recorded_on_blind_heldout_cells(labeller, lab_admin, active_model_row):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.8)
    assert selectors.suggestions_for(images=[held], user=labeller) == {}
    label = services.label_submit_as_offered(image=held, labeller=labeller, cell_class=cell_class("monocyte"))
    assert label.suggested_class is None and label.confirmed_suggestion is None
    set_lab(blind_heldout=False)
    assert selectors.suggestions_for(images=[held], user=labeller)[held.pk].code == "monocyte"


def test_naming_a_model_version_without_a_prediction_is_refused(labeller, lab_admin, active_model_row):
    from django.core.exceptions import ValidationError

    a = CellImageFactory(uploaded_by=lab_admin)
    with pytest.raises(ValidationError, match="made no prediction"):
        services.label_submit_as_offered(image=a, labeller=labeller, cell_class=cell_class("monocyte"),
                                         model_version_id=active_model_row.pk)


# --- Undo, settings -----------------------------------------------------------------------------
def test_withdraw_undoes_a_label_without_deleting_it(labeller, lab_admin):
    a = CellImageFactory(uploaded_by=lab_admin)
    services.label_submit(image=a, labeller=labeller, cell_class=cell_class("monocyte"))
    a.refresh_from_db()
    assert a.final_label is not None
    withdrawn = services.label_withdraw(image=a, labeller=labeller)
    a.refresh_from_db()
    assert withdrawn.superseded_at is not None and a.final_label is None
    assert Label.objects.filter(image=a).count() == 1
    assert AuditEvent.objects.filter(action="label.withdraw", target_id=str(a.pk)).get().before == {"class": "monocyte", "unsure": False}
    assert queue_ids(labeller, "unlabelled") == [a.pk]
    assert services.label_withdraw(image=a, labeller=labeller) is None


def test_lab_settings_change_is_audited_and_reevaluates_waiting_cells(labeller, lab_admin):
    set_lab(labels_required_train=2)
    a = CellImageFactory(uploaded_by=lab_admin)
    services.label_submit(image=a, labeller=labeller, cell_class=cell_class("monocyte"))
    a.refresh_from_db()
    assert a.final_label is None
    services.lab_settings_update(actor=lab_admin, labels_required_train=1, labels_required_heldout=3, blind_heldout=False)
    a.refresh_from_db()
    assert a.final_label.code == "monocyte"
    event = AuditEvent.objects.get(action="settings.labelling")
    assert event.actor == lab_admin
    assert event.before == {"labels_required_train": 2, "labels_required_heldout": 2, "blind_heldout": True,
                            "slides_train": True, "two_step_release": False}
    assert event.after == {"labels_required_train": 1, "labels_required_heldout": 3, "blind_heldout": False,
                           "slides_train": True, "two_step_release": False}


def test_lab_settings_out_of_range_is_refused(lab_admin):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.lab_settings_update(actor=lab_admin, labels_required_train=0, labels_required_heldout=2, blind_heldout=True)
    assert LabSettings.get().labels_required_train == 1


# --- Concurrency on a transactional database -----------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_experts_labelling_the_same_cell_at_once_never_overwrite_each_other():
    a_user, b_user = UserFactory(username="c1", role="labeller"), UserFactory(username="c2", role="labeller")
    cells = CellImageFactory.create_batch(6, uploaded_by=a_user, split="heldout")
    barrier, errors = threading.Barrier(2), []

    def read(user, code):
        try:
            barrier.wait()
            for cell in cells:
                services.label_submit_as_offered(image=cell, labeller=user, cell_class=cell_class(code))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=read, args=(a_user, "monocyte")), threading.Thread(target=read, args=(b_user, "lymphocyte"))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    for cell in cells:
        current = {lb.labeller.username: lb.cell_class.code for lb in Label.objects.filter(image=cell, superseded_at__isnull=True)}
        assert current == {"c1": "monocyte", "c2": "lymphocyte"}
        cell.refresh_from_db()
        assert cell.needs_review and cell.final_label is None


@pytest.mark.django_db(transaction=True)
def test_one_expert_changing_a_label_twice_at_once_keeps_exactly_one_current_label():
    user = UserFactory(username="c3", role="labeller")
    cell = CellImageFactory(uploaded_by=user)
    barrier, errors = threading.Barrier(3), []

    def read(code):
        try:
            barrier.wait()
            services.label_submit(image=cell, labeller=user, cell_class=cell_class(code))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=read, args=(c,)) for c in ("monocyte", "lymphocyte", "basophil")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert Label.objects.filter(image=cell).count() == 3
    assert Label.objects.filter(image=cell, superseded_at__isnull=True).count() == 1


# --- Pages ------------------------------------------------------------------------------------
def test_grid_shows_suggestions_hides_them_on_blind_heldout_and_has_class_hotkeys(client, labeller, lab_admin, active_model_row):
    a = CellImageFactory(uploaded_by=lab_admin)
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    PredictionFactory(image=a, model_version=active_model_row, top_class="monocyte", confidence=0.42)
    PredictionFactory(image=held, model_version=active_model_row, top_class="eosinophil", confidence=0.9)
    client.force_login(labeller)
    page = client.get(reverse("annotations:label_queue", args=["prelabelled"])).content.decode()
    assert "model: Monocyte 42%" in page and 'data-suggest="monocyte"' in page
    assert f'data-image="{held.pk}"' not in page
    held_page = client.get(reverse("annotations:label_queue", args=["heldout"])).content.decode()
    assert f'data-image="{held.pk}"' in held_page and "Eosinophil 90%" not in held_page and "blind" in held_page
    assert '"hotkey": "n"' in held_page and "js/labelling.js" in held_page
    assert client.get(reverse("annotations:label_queue", args=["nonsense"])).status_code == 404
    assert client.get(reverse("annotations:label_queue", args=["unlabelled"]) + "?page=x").status_code == 400


def test_grid_counts_and_index_reflect_the_queues(client, labeller, lab_admin):
    CellImageFactory.create_batch(3, uploaded_by=lab_admin)
    client.force_login(labeller)
    index = client.get(reverse("annotations:label_index"))
    assert index.status_code == 200
    assert [q["count"] for q in index.context["queues"]] == [3, 0, 0, 0]
    grid = client.get(reverse("annotations:label_queue", args=["unlabelled"]))
    assert grid.context["total"] == 3 and grid.context["n_cells"] == 3
    assert grid.content.decode().count('<div class="lcell"') == 3


def test_grid_cells_carry_the_suggestion_escaped_and_hide_it_on_blind_heldout_cells(client, labeller, lab_admin, active_model_row):
    from annotations.models import CellClass

    CellClass.objects.filter(code="monocyte").update(name='Mono<script>alert("x")</script>')
    a, b = CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    PredictionFactory(image=a, model_version=active_model_row, top_class="monocyte", confidence=0.724)
    PredictionFactory(image=b, model_version=active_model_row, top_class="monocyte", confidence=0.3, abstained=True)
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.9)
    set_lab(labels_required_heldout=1)
    client.force_login(labeller)
    html = client.get(reverse("annotations:label_queue", args=["prelabelled"])).content.decode()
    assert "<script>alert" not in html and "Mono&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; 72%" in html
    assert f'data-image="{a.pk}" data-split="train"' in html and f'data-suggest="monocyte" data-model-version="{active_model_row.pk}"' in html
    assert "referred (best guess Mono&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; 30%)" in html
    assert [int(x) for x in re.findall(r'data-image="(\d+)"', html)] == [b.pk, a.pk]  # least confident first; blind: no held-out
    html = client.get(reverse("annotations:label_queue", args=["heldout"])).content.decode()
    assert f'data-image="{held.pk}" data-split="heldout"' in html and '<span class="suggest">blind</span>' in html
    assert "data-suggest" not in html
    assert f'href="/label/cell/{held.pk}/?queue=heldout"' in html and 'tabindex="0"' in html


def test_single_cell_page_labels_without_javascript_and_moves_to_the_next_cell(client, labeller, lab_admin):
    a, b = CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    client.force_login(labeller)
    url = reverse("annotations:label_cell", args=[a.pk])
    assert client.get(url + "?queue=unlabelled").status_code == 200
    response = client.post(url, {"cell_class": "monocyte", "unsure": "on", "queue": "unlabelled"})
    assert response.status_code == 302 and response["Location"].endswith(f"/label/cell/{b.pk}/?queue=unlabelled")
    label = Label.objects.get(image=a, labeller=labeller)
    assert label.cell_class.code == "monocyte" and label.unsure
    assert client.post(url, {"cell_class": "unidentified"}).status_code == 400
    assert client.post(url, {"cell_class": "nope"}).status_code == 400


def test_labeller_does_not_see_other_experts_labels_before_the_cell_is_final(client, labeller, labeller2, reviewer, lab_admin):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("basophil"))
    client.force_login(labeller)
    for url in (reverse("annotations:image_detail", args=[held.pk]), reverse("annotations:label_cell", args=[held.pk])):
        body = client.get(url).content.decode()
        assert "lab2" not in body and "label.create" not in body
    client.force_login(reviewer)
    assert "lab2" in client.get(reverse("annotations:image_detail", args=[held.pk])).content.decode()


def test_thumbnails_are_made_once_and_cached_by_the_browser(client, labeller, lab_admin, settings):
    a = CellImageFactory(uploaded_by=lab_admin)
    client.force_login(labeller)
    url = reverse("annotations:image_thumb", args=[a.pk])
    first = client.get(url)
    assert first.status_code == 200 and first["Content-Type"] == "image/jpeg"
    assert "immutable" in first["Cache-Control"] and "max-age=31536000" in first["Cache-Control"]
    assert first["ETag"] == f'"{a.sha256}-128"'
    stored = list((Path(settings.MEDIA_ROOT) / "thumbs").rglob("*.jpg"))
    assert len(stored) == 1
    from PIL import Image

    assert max(Image.open(stored[0]).size) <= 128
    again = client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert client.get(url + "?s=7").status_code == 400
    assert client.get(reverse("annotations:image_thumb", args=[999999])).status_code == 404


def test_review_page_shows_labels_side_by_side_and_the_decision_is_final(client, labeller, labeller2, reviewer, reviewer2, lab_admin):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    services.label_submit(image=held, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("lymphocyte"), unsure=True)
    client.force_login(labeller)
    assert client.get(reverse("annotations:review_queue")).status_code == 403
    client.force_login(reviewer)
    body = client.get(reverse("annotations:review_queue")).content.decode()
    assert "lab1" in body and "lab2" in body and "Monocyte" in body and "not sure" in body
    response = client.post(reverse("annotations:review_decide", args=[held.pk]), {"cell_class": "lymphocyte", "note": "nucleus"})
    assert response.status_code == 302
    held.refresh_from_db()
    assert held.final_label.code == "lymphocyte" and not held.needs_review
    client.force_login(reviewer2)
    second = client.post(reverse("annotations:review_decide", args=[held.pk]), {"cell_class": "monocyte"}, follow=True)
    assert "Already adjudicated" in second.content.decode()
    assert held.adjudications.count() == 1
    bad = client.post(reverse("annotations:review_decide", args=[held.pk]), {"cell_class": "nope"}, follow=True)
    assert bad.status_code == 200
    assert [str(m) for m in bad.context["messages"]] == [
        f"Cell {held.pk}: Select a valid choice. nope is not one of the available choices."]


def test_agreement_page_reports_kappas_for_a_date_range(client, labeller, labeller2, reviewer, lab_admin):
    from sklearn.metrics import cohen_kappa_score

    cells = CellImageFactory.create_batch(4, uploaded_by=lab_admin, split="heldout")
    a = ["monocyte", "monocyte", "lymphocyte", "basophil"]
    b = ["monocyte", "lymphocyte", "lymphocyte", "basophil"]
    for cell, x, y in zip(cells, a, b):
        services.label_submit(image=cell, labeller=labeller, cell_class=cell_class(x))
        services.label_submit(image=cell, labeller=labeller2, cell_class=cell_class(y))
    client.force_login(reviewer)
    response = client.get(reverse("annotations:agreement"))
    report = response.context["report"]
    assert report.n_images == 4
    assert report.pairs[0].kappa == pytest.approx(cohen_kappa_score(a, b))
    assert report.fleiss_kappa is not None and "Fleiss" in response.content.decode()
    assert report.top_confusions == [("lymphocyte", "monocyte", 1)]
    empty = client.get(reverse("annotations:agreement"), {"start": "2001-01-01", "end": "2001-01-02"})
    assert empty.context["report"].n_images == 0
    assert client.get(reverse("annotations:agreement"), {"start": "2024-02-01", "end": "2024-01-01"}).status_code == 400
    assert client.get(reverse("annotations:agreement"), {"start": "not-a-date"}).status_code == 400
    client.force_login(labeller)
    assert client.get(reverse("annotations:agreement")).status_code == 403


def test_lab_settings_page_is_for_lab_admins_and_audited(client, reviewer, lab_admin):
    url = reverse("annotations:lab_settings")
    client.force_login(reviewer)
    assert client.get(url).status_code == 403
    client.force_login(lab_admin)
    assert client.get(url).status_code == 200
    assert client.post(url, {"labels_required_train": "0", "labels_required_heldout": "2"}).status_code == 400
    response = client.post(url, {"labels_required_train": "2", "labels_required_heldout": "3"})
    assert response.status_code == 302
    lab = LabSettings.get()
    assert (lab.labels_required_train, lab.labels_required_heldout, lab.blind_heldout) == (2, 3, False)
    assert AuditEvent.objects.filter(action="settings.labelling", actor=lab_admin).count() == 1


@pytest.mark.parametrize("blind", [True, False])
def test_queue_counts_equal_the_queues_themselves(labeller, labeller2, lab_admin, active_model_row, blind):
    set_lab(blind_heldout=blind, labels_required_train=2)
    train = CellImageFactory.create_batch(5, uploaded_by=lab_admin)
    held = CellImageFactory.create_batch(3, uploaded_by=lab_admin, split="heldout")
    for cell, conf in zip(train[:3] + held[:2], (0.2, 0.5, 0.9, 0.1, 0.3)):
        PredictionFactory(image=cell, model_version=active_model_row, top_class="monocyte", confidence=conf)
    services.label_submit(image=train[0], labeller=labeller2, cell_class=cell_class("monocyte"), unsure=True)
    services.label_submit(image=train[1], labeller=labeller2, cell_class=cell_class("monocyte"))
    services.label_submit(image=held[0], labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=train[4], labeller=labeller, cell_class=cell_class("basophil"), unsure=True)
    for user in (labeller, labeller2):
        counts = selectors.labelling_queue_counts(user=user)
        assert counts == {q: selectors.labelling_queue(user=user, queue=q).count() for q in selectors.QUEUES}
    assert selectors.labelling_queue_counts(user=labeller)["unsure"] == 1


def test_every_screen_says_why_the_model_referred_a_cell(client, labeller, reviewer, lab_admin, active_model_row):
    """The labelling grid, the single-cell page, the image page and the review queue name the
    reason: unlike the training images, split vote, low confidence."""
    foreign, unsure = CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    PredictionFactory(image=foreign, model_version=active_model_row, top_class="monocyte", confidence=0.95,
                      abstained=True, reasons=["out_of_distribution"], ood_score=7.4)
    PredictionFactory(image=unsure, model_version=active_model_row, top_class="monocyte", confidence=0.41,
                      abstained=True, reasons=["split_vote", "low_confidence"], ood_score=0.2)
    client.force_login(labeller)
    grid = client.get(reverse("annotations:label_queue", args=["prelabelled"])).content.decode()
    assert '<span class="reason ood">referred: unlike the training images</span>' in grid
    assert '<span class="reason">referred: split vote; low confidence</span>' in grid
    page = client.get(reverse("annotations:label_cell", args=[foreign.pk])).content.decode()
    assert "referred to an expert" in page and "unlike the training images" in page
    detail = client.get(reverse("annotations:image_detail", args=[foreign.pk])).content.decode()
    assert "unlike the training images" in detail and "yes (7.40)" in detail
    # two readers disagree: the reviewer's queue shows the model's call with its reason
    services.label_submit(image=unsure, labeller=labeller, cell_class=cell_class("monocyte"), unsure=True)
    client.force_login(reviewer)
    review = client.get(reverse("annotations:review_queue")).content.decode()
    assert "referred: split vote; low confidence" in review


def test_a_not_sure_first_reading_on_the_page_leaves_the_cell_in_the_second_readers_queue(client, labeller, labeller2,
                                                                                          reviewer, lab_admin):
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(labels_required_train=2)
    cell = CellImageFactory(uploaded_by=lab_admin)
    client.force_login(labeller)
    r = client.post(reverse("annotations:label_cell", args=[cell.pk]),
                    {"cell_class": "basophil", "unsure": "on", "queue": "unlabelled"})
    assert r.status_code == 302
    client.force_login(reviewer)
    review = client.get(reverse("annotations:review_queue")).content.decode()
    assert re.findall(r'<tr data-image="(\d+)"', review) == []
    client.force_login(labeller2)
    grid = client.get(reverse("annotations:label_queue", args=["unlabelled"])).content.decode()
    assert re.findall(r'data-image="(\d+)" data-split', grid) == [str(cell.pk)]
    client.post(reverse("annotations:label_cell", args=[cell.pk]), {"cell_class": "basophil", "queue": "unlabelled"})
    client.force_login(reviewer)
    review = client.get(reverse("annotations:review_queue")).content.decode()
    assert re.findall(r'<tr data-image="(\d+)"', review) == [str(cell.pk)]
