"""The blind held-out set: one rule (LabSettings.hides_model_call / hides_other_readings) decides
what every screen, the API and the selectors show of the model's call and of other experts' readings."""
import re

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotations import selectors, services
from annotations.models import LabSettings
from tests.factories import CellImageFactory, PredictionFactory, cell_class


def set_lab(**kw):
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(**kw)


@pytest.fixture
def disputed_heldout(labeller, labeller2, lab_admin, active_model_row):
    """A held-out cell the model calls 'monocyte 81%' and two labellers read differently."""
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.81)
    services.label_submit(image=held, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    held.refresh_from_db()
    assert held.needs_review and held.final_label is None
    return held


def test_the_rule_hides_the_model_from_everyone_until_decided_and_from_labellers_always(
        labeller, reviewer, lab_admin, disputed_heldout):
    lab = LabSettings.get()
    held = disputed_heldout
    for user in (labeller, reviewer, lab_admin):
        assert lab.hides_model_call(image=held, user=user)
    assert lab.hides_other_readings(image=held, user=labeller)
    assert not lab.hides_other_readings(image=held, user=reviewer)
    services.adjudication_submit(image=held, reviewer=reviewer, cell_class=cell_class("monocyte"))
    held.refresh_from_db()
    assert not lab.hides_model_call(image=held, user=reviewer)
    assert lab.hides_model_call(image=held, user=labeller)  # a labeller may still be asked to read it
    train = CellImageFactory(uploaded_by=lab_admin)
    assert not lab.hides_model_call(image=train, user=labeller)
    set_lab(blind_heldout=False)
    assert not LabSettings.get().hides_model_call(image=held, user=labeller)


def test_adjudication_screen_shows_no_model_call_on_an_undecided_heldout_cell(client, reviewer, lab_admin,
                                                                               active_model_row, disputed_heldout,
                                                                               labeller, labeller2):
    train = CellImageFactory(uploaded_by=lab_admin)
    PredictionFactory(image=train, model_version=active_model_row, top_class="eosinophil", confidence=0.41,
                      abstained=True)
    services.label_submit(image=train, labeller=labeller, cell_class=cell_class("eosinophil"), unsure=True)
    client.force_login(reviewer)
    html = client.get(reverse("annotations:review_queue")).content.decode()
    held_row = html.split(f'data-image="{disputed_heldout.pk}"')[1].split("</tr>")[0]
    train_row = html.split(f'data-image="{train.pk}"')[1].split("</tr>")[0]
    # the model's column of the row, not the whole row: the row also carries a random CSRF token
    held_call = re.search(r'<td class="model-call">(.*?)</td>', held_row, re.S).group(1)
    assert "Monocyte" not in held_call and "81" not in held_call
    assert "blind: shown once the cell is decided" in held_call
    # the training cell shows the model's abstention in the portal's one wording
    assert "referred (best guess Eosinophil 41%)" in train_row
    # after the decision the cell's page shows the model's call to the reviewer
    services.adjudication_submit(image=disputed_heldout, reviewer=reviewer, cell_class=cell_class("lymphocyte"))
    page = client.get(reverse("annotations:image_detail", args=[disputed_heldout.pk])).content.decode()
    assert "Monocyte 81%" in page


def test_reviewer_cell_page_hides_the_model_until_the_cell_is_decided(client, reviewer, disputed_heldout):
    client.force_login(reviewer)
    page = client.get(reverse("annotations:image_detail", args=[disputed_heldout.pk])).content.decode()
    assert "Monocyte 81%" not in page and "0.810" not in page
    assert "waiting for adjudication" in page  # reviewers adjudicate disputes: they see them


def test_labeller_sees_only_their_own_reading_of_a_heldout_cell(client, labeller, disputed_heldout):
    client.force_login(labeller)
    page = client.get(reverse("annotations:image_detail", args=[disputed_heldout.pk])).content.decode()
    assert "waiting for adjudication" not in page
    assert "Monocyte 81%" not in page
    assert "lab2" not in page  # the other reader's label event is not in the history either
    api = APIClient()
    api.force_authenticate(labeller)
    assert api.get(f"/api/images/{disputed_heldout.pk}/").json()["needs_review"] is None
    listed = {row["id"]: row for row in api.get("/api/images/?split=heldout").json()["results"]}
    assert listed[disputed_heldout.pk]["needs_review"] is None


def test_reviewer_still_reads_needs_review_in_the_api(reviewer, disputed_heldout):
    api = APIClient()
    api.force_authenticate(reviewer)
    assert api.get(f"/api/images/{disputed_heldout.pk}/").json()["needs_review"] is True


def test_needs_review_is_visible_on_training_cells_and_without_blind_mode(labeller, labeller2, lab_admin,
                                                                        disputed_heldout):
    set_lab(labels_required_train=2)
    train = CellImageFactory(uploaded_by=lab_admin)
    services.label_submit(image=train, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=train, labeller=labeller2, cell_class=cell_class("basophil"))
    api = APIClient()
    api.force_authenticate(labeller)
    assert api.get(f"/api/images/{train.pk}/").json()["needs_review"] is True
    set_lab(blind_heldout=False)
    assert api.get(f"/api/images/{disputed_heldout.pk}/").json()["needs_review"] is True


def test_adjudication_api_hides_the_suggestion_shown_on_a_blind_heldout_cell(reviewer, labeller2, lab_admin,
                                                                            active_model_row, disputed_heldout):
    # a reading made while blind mode was off carries the model's suggestion
    set_lab(blind_heldout=False)
    services.label_submit_as_offered(image=disputed_heldout, labeller=labeller2, cell_class=cell_class("basophil"))
    set_lab(blind_heldout=True)
    api = APIClient()
    api.force_authenticate(reviewer)
    item = next(i for i in api.get("/api/adjudications/").json()["results"] if i["id"] == disputed_heldout.pk)
    assert [lb["suggested_class"] for lb in item["labels"]] == [None, None]


def test_unsure_queue_holds_no_blind_heldout_cell(labeller, labeller2, lab_admin):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    train = CellImageFactory(uploaded_by=lab_admin)
    for cell in (held, train):
        services.label_submit(image=cell, labeller=labeller2, cell_class=cell_class("monocyte"), unsure=True)
    ids = list(selectors.labelling_queue(user=labeller, queue="unsure").values_list("id", flat=True))
    assert ids == [train.pk]
    set_lab(blind_heldout=False)
    ids = list(selectors.labelling_queue(user=labeller, queue="unsure").values_list("id", flat=True))
    assert ids == [held.pk, train.pk]


def test_grid_and_single_cell_page_say_blind_and_use_one_wording_for_abstention(client, labeller, lab_admin,
                                                                                active_model_row):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    train = CellImageFactory(uploaded_by=lab_admin)
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.9)
    PredictionFactory(image=train, model_version=active_model_row, top_class="eosinophil", confidence=0.41,
                      abstained=True)
    client.force_login(labeller)
    grid = client.get(reverse("annotations:label_queue", args=["heldout"]))
    assert "annotations/_grid_cells.html" in [t.name for t in grid.templates]
    cell_html = grid.content.decode().split(f'data-image="{held.pk}"')[1].split("</div>")[0]
    assert "blind" in cell_html and "data-suggest" not in cell_html and "90%" not in cell_html
    grid = client.get(reverse("annotations:label_queue", args=["prelabelled"])).content.decode()
    assert "model: referred (best guess Eosinophil 41%)" in grid
    assert "(unsure)" not in grid
    page = client.get(reverse("annotations:label_cell", args=[train.pk])).content.decode()
    assert "referred (best guess Eosinophil 41%)" in page
