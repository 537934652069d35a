"""A cell the model referred to an expert: its best guess is offered, never accepted by "confirm the
model's call"; the label records that the suggestion was a best guess, and the pages word it so."""
import re

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotations import services
from annotations.models import AuditAction, AuditEvent, Label
from tests.factories import CellImageFactory, PredictionFactory, cell_class


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def referred(lab_admin, active_model_row):
    """A training cell the model referred (split vote): best guess Monocyte 32%."""
    image = CellImageFactory(uploaded_by=lab_admin)
    PredictionFactory(image=image, model_version=active_model_row, top_class="monocyte", confidence=0.32,
                      abstained=True, reasons=["split_vote"])
    return image


@pytest.fixture
def accepted(lab_admin, active_model_row):
    """A training cell the model called Lymphocyte 93% (accepted)."""
    image = CellImageFactory(uploaded_by=lab_admin)
    PredictionFactory(image=image, model_version=active_model_row, top_class="lymphocyte", confidence=0.93)
    return image


def test_confirming_the_model_call_on_a_referred_cell_is_refused_with_the_reason_and_the_best_guess(
        api, labeller, referred, active_model_row):
    api.force_authenticate(labeller)
    r = api.post("/api/labels/", {"image": referred.pk, "confirm_model_call": True,
                                  "model_version": active_model_row.pk}, format="json")
    assert r.status_code == 400
    (message,) = r.json()["confirm_model_call"]
    assert message == ("The model referred this cell (split vote): its best guess, Monocyte 32%, is not a call to "
                       "confirm. Choose the class yourself (its key or the list).")
    assert not Label.objects.filter(image=referred).exists()
    assert not AuditEvent.objects.filter(action=AuditAction.LABEL_CREATE).exists()


def test_confirming_an_accepted_call_labels_the_cell_with_it(api, labeller, accepted):
    api.force_authenticate(labeller)
    r = api.post("/api/labels/", {"image": accepted.pk, "confirm_model_call": True}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert (body["cell_class"], body["suggested_class"], body["suggestion_referred"]) == ("lymphocyte", "lymphocyte", False)
    assert body["confirmed_suggestion"] is True and body["confirmed_model_call"] is True


def test_an_explicit_class_on_a_referred_cell_is_recorded_as_taking_the_best_guess_not_confirming_a_call(
        api, labeller, referred):
    api.force_authenticate(labeller)
    r = api.post("/api/labels/", {"image": referred.pk, "cell_class": "monocyte"}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert (body["cell_class"], body["suggested_class"], body["suggestion_referred"]) == ("monocyte", "monocyte", True)
    assert body["confirmed_model_call"] is False
    event = AuditEvent.objects.get(action=AuditAction.LABEL_CREATE)
    assert event.after["suggested"] == "monocyte" and event.after["suggestion_referred"] is True


def test_confirm_needs_a_call_the_reader_may_see_and_excludes_a_class(api, labeller, lab_admin, active_model_row, accepted):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.9)
    api.force_authenticate(labeller)
    r = api.post("/api/labels/", {"image": held.pk, "confirm_model_call": True}, format="json")  # read blind
    assert r.status_code == 400 and r.json()["confirm_model_call"] == [
        "The model offers no call on this cell: choose a class."]
    for data in ({"image": accepted.pk}, {"image": accepted.pk, "cell_class": "lymphocyte", "confirm_model_call": True}):
        r = api.post("/api/labels/", data, format="json")
        assert r.status_code == 400 and "either cell_class or confirm_model_call" in r.json()["cell_class"][0]
    assert not Label.objects.exists()


def test_the_service_refuses_to_confirm_a_referred_cell(labeller, referred):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="referred this cell"):
        services.label_confirm_model_call(image=referred, labeller=labeller)
    assert not Label.objects.exists()


def _checked_classes(html: str) -> list[str]:
    return re.findall(r'<input type="radio" name="cell_class" value="([^"]+)"[^>]* checked>', html)


def test_the_no_js_form_of_a_referred_cell_starts_with_no_class_chosen(client, labeller, referred, accepted):
    client.force_login(labeller)
    html = client.get(reverse("annotations:label_cell", args=[referred.pk])).content.decode()
    assert _checked_classes(html) == []
    assert "referred (best guess Monocyte 32%)" in html and "Choose the class yourself" in html
    html = client.get(reverse("annotations:label_cell", args=[accepted.pk])).content.decode()
    assert _checked_classes(html) == ["lymphocyte"]  # an accepted call is preselected
    # Submitting the untouched form of the referred cell labels nothing.
    r = client.post(reverse("annotations:label_cell", args=[referred.pk]), {"queue": ""})
    assert r.status_code == 400 and not Label.objects.filter(image=referred).exists()


def test_the_grid_marks_a_referred_cell_and_shows_its_best_guess(client, labeller, referred, accepted):
    client.force_login(labeller)
    html = client.get(reverse("annotations:label_queue", args=["prelabelled"])).content.decode()
    cell = re.search(rf'<div class="lcell"[^>]*data-image="{referred.pk}"[^>]*>', html).group(0)
    assert 'data-referred="1"' in cell and 'data-suggest="monocyte"' in cell and 'data-reason="split vote"' in cell
    cell = re.search(rf'<div class="lcell"[^>]*data-image="{accepted.pk}"[^>]*>', html).group(0)
    assert "data-referred" not in cell and 'data-suggest="lymphocyte"' in cell


def test_the_review_queue_says_confirmed_only_where_the_model_had_accepted_the_class(
        client, labeller, labeller2, reviewer, referred, accepted):
    services.label_submit_as_offered(image=referred, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit_as_offered(image=referred, labeller=labeller2, cell_class=cell_class("immature_granulocyte"))
    services.label_confirm_model_call(image=accepted, labeller=labeller)
    services.label_submit_as_offered(image=accepted, labeller=labeller2, cell_class=cell_class("monocyte"))
    client.force_login(reviewer)
    html = client.get(reverse("annotations:review_queue")).content.decode()

    def wording(image):
        row = html.split(f'<tr data-image="{image.pk}"')[1].split("</tr>")[0]
        return re.findall(r'<span class="label-vs-model">([^<]*)</span>', row)

    assert wording(referred) == [
        "classified Monocyte (the model had referred it; its best guess was Monocyte)",
        "classified Immature granulocyte (the model had referred it; its best guess was Monocyte)",
    ]
    assert wording(accepted) == ["confirmed the model's Lymphocyte", "changed the model's Lymphocyte"]


def test_the_adjudication_api_says_which_suggestions_were_best_guesses(api, labeller, labeller2, reviewer, referred):
    services.label_submit_as_offered(image=referred, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit_as_offered(image=referred, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    api.force_authenticate(reviewer)
    (item,) = api.get("/api/adjudications/").json()["results"]
    assert [(lb["suggested_class"], lb["suggestion_referred"]) for lb in item["labels"]] == [("monocyte", True)] * 2


def test_labels_made_before_the_field_existed_learn_which_suggestions_were_best_guesses(
        labeller, referred, accepted, active_model_row):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("annotations.migrations.0009_label_suggestion_referred")
    services.label_submit_as_offered(image=referred, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit_as_offered(image=accepted, labeller=labeller, cell_class=cell_class("lymphocyte"))
    Label.objects.update(suggestion_referred=False)  # as the rows stood before the migration
    migration.mark_referred_suggestions(apps, None)
    assert dict(Label.objects.values_list("image_id", "suggestion_referred")) == {referred.pk: True, accepted.pk: False}
