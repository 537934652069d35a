"""The labelling operations over the REST API, with the same role checks as the pages."""
import pytest
from rest_framework.test import APIClient

from annotations import services
from annotations.models import Label, LabSettings
from tests.factories import CellImageFactory, PredictionFactory, cell_class


@pytest.fixture
def api():
    return APIClient()


def as_user(api, user):
    api.force_authenticate(user)
    return api


def test_queue_counts_and_queue_listing(api, labeller, lab_admin, active_model_row):
    a, b = CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    PredictionFactory(image=b, model_version=active_model_row, top_class="monocyte", confidence=0.3)
    as_user(api, labeller)
    counts = {q["name"]: q["count"] for q in api.get("/api/queues/").json()["queues"]}
    assert counts == {"unlabelled": 2, "prelabelled": 1, "unsure": 0, "heldout": 0}
    body = api.get("/api/queues/prelabelled/").json()
    assert body["count"] == 1
    (cell,) = body["results"]
    assert cell["id"] == b.pk and cell["suggestion"]["cell_class"] == "monocyte" and cell["my_label"] is None
    assert cell["thumb_url"] == f"/images/{b.pk}/thumb/"
    assert api.get("/api/queues/nonsense/").status_code == 404


def test_the_api_says_why_the_model_referred_a_cell(api, labeller, lab_admin, active_model_row):
    foreign, plain = CellImageFactory.create_batch(2, uploaded_by=lab_admin)
    PredictionFactory(image=foreign, model_version=active_model_row, top_class="monocyte", confidence=0.95,
                      abstained=True, reasons=["out_of_distribution"], ood_score=7.4)
    PredictionFactory(image=plain, model_version=active_model_row, top_class="monocyte", confidence=0.9, ood_score=-0.3)
    as_user(api, labeller)
    s = api.get(f"/api/cells/{foreign.pk}/").json()["suggestion"]
    assert s["abstained"] and s["out_of_distribution"] and s["reasons"] == ["out_of_distribution"]
    assert s["reason"] == "unlike the training images" and s["ood_score"] == 7.4
    s = api.get(f"/api/cells/{plain.pk}/").json()["suggestion"]
    assert not s["abstained"] and s["reason"] == "" and s["reasons"] == [] and not s["out_of_distribution"]


def test_get_cell_hides_the_suggestion_on_blind_heldout_and_shows_only_my_label(api, labeller, labeller2, lab_admin, active_model_row):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    PredictionFactory(image=held, model_version=active_model_row, top_class="monocyte", confidence=0.8)
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("basophil"))
    as_user(api, labeller)
    body = api.get(f"/api/cells/{held.pk}/").json()
    assert body["suggestion"] is None and body["my_label"] is None
    assert "basophil" not in str(body)
    assert api.get("/api/cells/999999/").status_code == 404


def test_post_label_records_the_suggestion_and_supersedes_my_previous_label(api, labeller, lab_admin, active_model_row):
    a = CellImageFactory(uploaded_by=lab_admin)
    PredictionFactory(image=a, model_version=active_model_row, top_class="monocyte", confidence=0.8)
    as_user(api, labeller)
    first = api.post("/api/labels/", {"image": a.pk, "cell_class": "monocyte", "model_version": active_model_row.pk}, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["confirmed_suggestion"] is True and first.json()["suggestion_model_version"] == active_model_row.pk
    second = api.post("/api/labels/", {"image": a.pk, "cell_class": "lymphocyte", "unsure": True}, format="json")
    assert second.status_code == 201 and second.json()["confirmed_suggestion"] is False
    assert Label.objects.filter(image=a).count() == 2
    assert Label.objects.filter(image=a, superseded_at__isnull=True).get().cell_class.code == "lymphocyte"
    mine = api.get(f"/api/cells/{a.pk}/").json()["my_label"]
    assert mine["cell_class"] == "lymphocyte" and mine["unsure"] is True


@pytest.mark.parametrize("payload, status", [
    ({"image": 1, "cell_class": "no-such-class"}, 400),
    ({"cell_class": "monocyte"}, 400),
    ({"image": "x", "cell_class": "monocyte"}, 400),
    ({"image": 999999, "cell_class": "monocyte"}, 404),
    ({"image": 1, "cell_class": "unidentified"}, 400),
])
def test_bad_label_requests_get_clear_4xx(api, labeller, lab_admin, payload, status):
    a = CellImageFactory(uploaded_by=lab_admin)
    if payload.get("image") == 1:
        payload = {**payload, "image": a.pk}
    response = as_user(api, labeller).post("/api/labels/", payload, format="json")
    assert response.status_code == status
    assert Label.objects.count() == 0


def test_label_after_adjudication_is_a_conflict(api, labeller, labeller2, reviewer, lab_admin):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    services.label_submit(image=held, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    services.adjudication_submit(image=held, reviewer=reviewer, cell_class=cell_class("monocyte"))
    response = as_user(api, labeller).post("/api/labels/", {"image": held.pk, "cell_class": "basophil"}, format="json")
    assert response.status_code == 409 and "adjudicated" in response.json()["detail"]
    assert as_user(api, labeller).post("/api/labels/withdraw/", {"image": held.pk}, format="json").status_code == 409


def test_bulk_label_and_withdraw(api, labeller, lab_admin):
    cells = CellImageFactory.create_batch(3, uploaded_by=lab_admin)
    as_user(api, labeller)
    response = api.post("/api/labels/bulk/", {"images": [c.pk for c in cells] + [999999], "cell_class": "eosinophil"}, format="json")
    assert response.status_code == 200
    assert len(response.json()["labels"]) == 3 and response.json()["refused"] == [{"image": 999999, "reason": "No such cell."}]
    assert api.post("/api/labels/bulk/", {"images": [], "cell_class": "eosinophil"}, format="json").status_code == 400
    assert api.post("/api/labels/withdraw/", {"image": cells[0].pk}, format="json").json() == {"withdrawn": True}
    assert api.post("/api/labels/withdraw/", {"image": cells[0].pk}, format="json").json() == {"withdrawn": False}
    assert Label.objects.filter(superseded_at__isnull=True).count() == 2


def test_adjudication_api_is_for_reviewers_shows_labels_side_by_side_and_first_wins(api, labeller, labeller2, reviewer, reviewer2, lab_admin):
    held = CellImageFactory(uploaded_by=lab_admin, split="heldout")
    services.label_submit(image=held, labeller=labeller, cell_class=cell_class("monocyte"))
    services.label_submit(image=held, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    assert as_user(api, labeller).get("/api/adjudications/").status_code == 403
    assert api.post("/api/adjudications/", {"image": held.pk, "cell_class": "monocyte"}, format="json").status_code == 403
    body = as_user(api, reviewer).get("/api/adjudications/").json()
    (item,) = body["results"]
    assert {(lb["labeller"], lb["cell_class"]) for lb in item["labels"]} == {("lab1", "monocyte"), ("lab2", "lymphocyte")}
    decided = api.post("/api/adjudications/", {"image": held.pk, "cell_class": "monocyte", "note": "granules"}, format="json")
    assert decided.status_code == 201 and decided.json()["reviewer"] == "rev1"
    second = as_user(api, reviewer2).post("/api/adjudications/", {"image": held.pk, "cell_class": "lymphocyte"}, format="json")
    assert second.status_code == 409
    held.refresh_from_db()
    assert held.final_label.code == "monocyte"
    assert api.get("/api/adjudications/").json()["results"] == []


def test_lab_settings_api_is_for_lab_admins(api, reviewer, lab_admin):
    assert as_user(api, reviewer).get("/api/lab-settings/").status_code == 403
    as_user(api, lab_admin)
    assert api.get("/api/lab-settings/").json() == {"labels_required_train": 1, "labels_required_heldout": 2,
                                                  "blind_heldout": True, "slides_train": True,
                                                  "two_step_release": False}
    bad = api.post("/api/lab-settings/", {"labels_required_train": 9, "labels_required_heldout": 2, "blind_heldout": True}, format="json")
    assert bad.status_code == 400
    ok = api.post("/api/lab-settings/", {"labels_required_train": 2, "labels_required_heldout": 2, "blind_heldout": False}, format="json")
    assert ok.status_code == 200 and LabSettings.get().labels_required_train == 2
    assert LabSettings.get().slides_train  # left out: unchanged
    off = api.post("/api/lab-settings/", {"labels_required_train": 2, "labels_required_heldout": 2, "blind_heldout": False,
                                          "slides_train": False}, format="json")
    assert off.status_code == 200 and off.json()["slides_train"] is False and not LabSettings.get().slides_train


def test_anonymous_gets_no_labelling_api(api, db):
    for url in ("/api/queues/", "/api/queues/unlabelled/", "/api/adjudications/", "/api/cells/1/"):
        assert api.get(url).status_code in (401, 403)
    assert api.post("/api/labels/", {}, format="json").status_code in (401, 403)


def test_the_labelling_operations_are_in_the_openapi_schema(api, labeller):
    schema = as_user(api, labeller).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/queues/", "/api/queues/{queue}/", "/api/cells/{id}/", "/api/labels/", "/api/labels/bulk/",
                 "/api/labels/withdraw/", "/api/adjudications/", "/api/lab-settings/"):
        assert path in schema["paths"], path
    assert "post" in schema["paths"]["/api/adjudications/"] and "get" in schema["paths"]["/api/adjudications/"]
    assert "LabelCreateInputRequest" in schema["components"]["schemas"] or "LabelCreateInput" in schema["components"]["schemas"]


def test_a_not_sure_first_reading_over_the_api_waits_for_the_second_reader(api, labeller, labeller2, reviewer,
                                                                           lab_admin):
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(labels_required_train=2)
    cell = CellImageFactory(uploaded_by=lab_admin)
    as_user(api, labeller)
    r = api.post("/api/labels/", {"image": cell.pk, "cell_class": "basophil", "unsure": True}, format="json")
    assert r.status_code == 201
    as_user(api, reviewer)
    assert [c["id"] for c in api.get("/api/adjudications/").json()["results"]] == []
    as_user(api, labeller2)
    assert [c["id"] for c in api.get("/api/queues/unlabelled/").json()["results"]] == [cell.pk]
    r = api.post("/api/labels/", {"image": cell.pk, "cell_class": "basophil"}, format="json")
    assert r.status_code == 201
    as_user(api, reviewer)
    assert [c["id"] for c in api.get("/api/adjudications/").json()["results"]] == [cell.pk]
