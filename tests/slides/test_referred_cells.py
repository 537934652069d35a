"""The verification screen and the slide API on a cell the model referred: 'confirm' keeps a class
the model accepted and is refused on a referred cell (its best guess is not a call); an explicit
class classifies it, recorded as taking the best guess; the no-JS class list starts empty."""
import re

import pytest

from annotations.models import AuditEvent, Label
from slides.models import Slide, SlideCell
from tests.factories import CellImageFactory, ModelVersionFactory, cell_class


@pytest.fixture
def slide(lab_admin):
    version = ModelVersionFactory(status="active")
    slide = Slide.objects.create(code="REF-0001", created_by=lab_admin, kind="cells", status="ready",
                                 task_state="done", model_version=version)
    SlideCell.objects.create(
        slide=slide, image=CellImageFactory(uploaded_by=lab_admin), predicted_class="unidentified",
        top_class="monocyte", confidence=0.32, agreement=1, n_backbones=3, reasons=["split_vote"],
        model_version=version, final_class=cell_class("unidentified"))
    SlideCell.objects.create(
        slide=slide, image=CellImageFactory(uploaded_by=lab_admin), predicted_class="lymphocyte",
        top_class="lymphocyte", confidence=0.93, agreement=3, n_backbones=3, model_version=version,
        final_class=cell_class("lymphocyte"))
    return slide


def cells(slide):
    referred, accepted = slide.cells.order_by("id")
    return referred, accepted


def reclassify(client, cell, target):
    return client.post(f"/api/slides/{cell.slide_id}/cells/{cell.pk}/reclassify/", {"target": target},
                       content_type="application/json")


def test_the_api_refuses_to_confirm_a_referred_cell_and_names_its_best_guess(client, reviewer, slide):
    referred, _ = cells(slide)
    client.force_login(reviewer)
    r = reclassify(client, referred, "confirm")
    assert r.status_code == 400
    assert r.json()["target"] == [
        "The model referred this cell (split vote): its best guess, Monocyte 32%, is not a call to confirm. "
        "Choose the class yourself (its key or the list)."]
    referred.refresh_from_db()
    assert referred.final_class.code == "unidentified" and referred.changed_by_id is None
    assert not Label.objects.filter(image=referred.image).exists()


def test_confirm_keeps_an_accepted_call_as_the_reviewers_label(client, reviewer, slide):
    _, accepted = cells(slide)
    client.force_login(reviewer)
    r = reclassify(client, accepted, "confirm")
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["final_class"], body["verified"], body["referred"]) == ("lymphocyte", True, False)
    label = Label.objects.get(image=accepted.image)
    assert (label.cell_class.code, label.suggestion_referred, label.confirmed_model_call) == ("lymphocyte", False, True)
    # Once the cell is not counted there is nothing to confirm.
    assert reclassify(client, accepted, "not_counted").status_code == 200
    assert "not counted" in reclassify(client, accepted, "confirm").json()["target"][0]


def test_a_class_on_a_referred_cell_is_recorded_as_the_experts_not_a_confirmation(client, reviewer, slide):
    referred, _ = cells(slide)
    client.force_login(reviewer)
    r = reclassify(client, referred, "monocyte")
    assert r.status_code == 200 and r.json()["final_class"] == "monocyte" and r.json()["referred"] is True
    label = Label.objects.get(image=referred.image)
    assert (label.suggested_class.code, label.suggestion_referred, label.confirmed_model_call) == ("monocyte", True, False)
    event = AuditEvent.objects.filter(action="slide.cell_reclassify").get()
    assert event.after["suggested"] == "monocyte" and event.after["suggestion_referred"] is True
    # Now the expert's class stands: a second reviewer may confirm it.
    assert reclassify(client, referred, "confirm").status_code == 200


def test_the_no_js_class_list_of_an_unidentified_cell_starts_empty(client, reviewer, slide):
    referred, accepted = cells(slide)
    client.force_login(reviewer)
    html = client.get(f"/slides/{slide.pk}/verify/").content.decode()

    def chosen(cell):
        form = html.split(f'id="cell-{cell.pk}"')[1].split("</select>")[0]
        return re.findall(r'<option value="([^"]*)"[^>]*\bselected\b', form)

    assert chosen(referred) == [""]
    assert chosen(accepted) == ["lymphocyte"]
    card = html.split(f'id="cell-{referred.pk}"')[1].split("</div>")[0]
    assert 'data-referred="1"' in card and 'data-best-guess="monocyte"' in card
    assert "model: referred (best guess Monocyte 32%)" in card
    # Sending that empty choice (or a form without one) classifies nothing.
    r = client.post(f"/slides/{slide.pk}/cells/{referred.pk}/reclassify/", {"target": ""},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and r.json()["error"] == "Choose a class for this cell (or 'not counted')."
    referred.refresh_from_db()
    assert referred.final_class.code == "unidentified" and referred.changed_by_id is None


def test_confirming_the_unidentified_group_is_refused(client, reviewer, slide):
    client.force_login(reviewer)
    r = client.post(f"/api/slides/{slide.pk}/cells/confirm/", {"code": "unidentified"}, content_type="application/json")
    assert r.status_code == 400 and "best guess is not a call" in r.json()["target"][0]
    assert not Label.objects.exists()
