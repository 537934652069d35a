"""Proficiency tests through the API and the pages: the draw from decided cells, assignment and
freezing, one attempt, the reference hidden everywhere while a test is open, the score, roles, the
model as a participant, the PDF record and the CSV export."""
import datetime

import pytest
from django.utils import timezone
from sklearn.metrics import cohen_kappa_score

from annotations.models import AuditEvent, CellImage
from classifier.models import ModelVersion
from competency.models import Assignment, ProficiencyTest
from tests.factories import ModelVersionFactory, PredictionFactory
from tests.helpers import html_element

DUE = (timezone.localdate() + datetime.timedelta(days=14)).isoformat()
pytestmark = pytest.mark.django_db


def build(client, **overrides):
    body = {"name": "Morphology 2026", "size": 10, "class_minimums": {"lymphocyte": 3, "monocyte": 3, "blast": 3},
            "critical_classes": ["blast"], "pass_min_agreement": 0.8, "seed": 5, **overrides}
    return client.post("/api/competency/tests/create/", body, content_type="application/json")


@pytest.fixture
def admin_client(client, lab_admin):
    client.force_login(lab_admin)
    return client


@pytest.fixture
def test_assigned(admin_client, lab, labeller, labeller2):
    test_id = build(admin_client).json()["id"]
    r = admin_client.post(f"/api/competency/tests/{test_id}/assign/", {"people": ["lab1", "lab2"], "due_date": DUE},
                          content_type="application/json")
    assert r.status_code == 201, r.content
    admin_client.logout()
    return ProficiencyTest.objects.get(pk=test_id)


def as_user(client, user):
    client.logout()
    client.force_login(user)
    return client


def test_a_test_is_drawn_from_decided_cells_only_stratified_and_reproducible(admin_client, lab):
    r = build(admin_client)
    assert r.status_code == 201, r.content
    cells = r.json()["cells"]
    drawn = {c["image"] for c in cells}
    assert len(cells) == 10
    assert drawn <= {pk for ids in lab.decided.values() for pk in ids}
    assert not drawn & set(lab.undecided)
    refs = [c["reference"] for c in cells]
    assert refs.count("blast") == 3 and refs.count("monocyte") >= 3 and refs.count("lymphocyte") >= 3
    assert {c["decided_by"] for c in cells if c["image"] in lab.adjudicated} == {"adjudication"}
    for c in cells:
        assert c["reference"] == CellImage.objects.get(pk=c["image"]).final_label.code
    again = build(admin_client).json()["cells"]
    assert [c["image"] for c in again] == [c["image"] for c in cells]
    assert AuditEvent.objects.filter(action="competency.test_create").count() == 2


def test_a_class_with_too_few_decided_cells_is_named_and_nothing_is_built(admin_client, lab):
    r = build(admin_client, class_minimums={"blast": 5, "basophil": 1})
    assert r.status_code == 400
    text = r.content.decode()
    assert "blast: 3 decided cell(s), 5 wanted" in text and "basophil: 0 decided cell(s), 1 wanted" in text
    assert not ProficiencyTest.objects.exists()


def test_the_first_assignment_freezes_the_test_and_a_person_gets_it_once(test_assigned, client, lab_admin):
    assert test_assigned.frozen
    assert test_assigned.assignments.count() == 2
    as_user(client, lab_admin)
    r = client.post(f"/api/competency/tests/{test_assigned.pk}/assign/", {"people": ["lab1"], "due_date": DUE},
                    content_type="application/json")
    assert r.status_code == 400 and "lab1" in r.content.decode()


def _answer(client, a, image, code, unsure=False, seconds=3.0):
    return client.post(f"/api/competency/assignments/{a.pk}/answers/",
                       {"image": image, "cell_class": code, "unsure": unsure, "seconds": seconds},
                       content_type="application/json")


def test_while_the_test_is_open_no_page_or_api_shows_the_taker_the_reference(test_assigned, client, labeller,
                                                                            reviewer):
    cell = test_assigned.cells.select_related("reference").first()
    pk, ref = cell.image_id, cell.reference
    as_user(client, reviewer)  # not taking it: sees the final label
    assert client.get(f"/api/images/{pk}/").json()["final_label"] == ref.code
    as_user(client, labeller)
    assert client.get(f"/api/images/{pk}/").json()["final_label"] is None
    listed = {i["id"]: i for i in client.get("/api/images/?page_size=100").json()["results"]}
    assert listed[pk]["final_label"] is None
    assert client.get(f"/api/cells/{pk}/").json()["my_label"] is None
    assert client.post("/api/labels/", {"image": pk, "cell_class": ref.code}, content_type="application/json"
                       ).status_code == 409
    page = client.get(f"/images/{pk}/").content.decode()
    assert "hidden while your proficiency test" in html_element(page, "final-label").text
    assert client.get(f"/label/cell/{pk}/").status_code == 403
    # the grid in exam mode: no model call, no reference, no link to the cell's labelling page
    a = Assignment.objects.get(person=labeller)
    grid = client.get(f"/competency/take/{a.pk}/").content.decode()
    assert 'data-mode="exam"' in grid and "data-suggest" not in grid and f"/label/cell/{pk}/" not in grid
    detail = client.get(f"/api/competency/assignments/{a.pk}/").json()
    assert {c["reference"] for c in detail["cells"]} == {None}
    # after submitting, the reference is there again
    assert client.post(f"/api/competency/assignments/{a.pk}/submit/").status_code == 200
    assert client.get(f"/api/images/{pk}/").json()["final_label"] == ref.code


def test_the_taker_answers_submits_once_and_is_scored_against_the_reference(test_assigned, client, labeller):
    as_user(client, labeller)
    a = Assignment.objects.get(person=labeller)
    cells = list(test_assigned.cells.select_related("reference"))
    lymph = [c for c in cells if c.reference.code == "lymphocyte"]
    given = {}
    for c in cells:
        code = c.reference.code
        if c == lymph[0]:
            code = "monocyte"  # one lymphocyte called a monocyte
        given[c.pk] = code
        assert _answer(client, a, c.image_id, code, unsure=(c == lymph[1])).status_code == 200
    assert _answer(client, a, lymph[2].image_id, "lymphocyte", seconds=1.0).json()["seconds"] == 3.0  # largest kept
    a.refresh_from_db()
    assert a.status == "in_progress" and a.answers.count() == 10
    r = client.post(f"/api/competency/assignments/{a.pk}/submit/")
    assert r.status_code == 200
    result = r.json()["result"]
    assert (result["n"], result["correct"], result["not_sure"]) == (10, 8, 1)
    assert result["agreement"] == pytest.approx(0.8)
    refs = [c.reference.code for c in cells]
    calls = [("(not called)" if c == lymph[1] else given[c.pk]) for c in cells]
    assert result["kappa"] == pytest.approx(cohen_kappa_score(refs, calls))
    assert result["passed"] is True
    assert result["seconds_mean"] == pytest.approx(3.0)
    assert client.post(f"/api/competency/assignments/{a.pk}/submit/").status_code == 409
    assert _answer(client, a, cells[0].image_id, "blast").status_code == 409
    # the review of the missed cells, beside their reference
    page = client.get(f"/competency/results/{a.pk}/").content.decode()
    assert page.count('class="missed"') == 2
    assert "Passed" in html_element(page, "verdict").text


def test_a_blast_called_anything_else_fails_the_test(test_assigned, client, labeller2):
    as_user(client, labeller2)
    a = Assignment.objects.get(person=labeller2)
    cells = list(test_assigned.cells.select_related("reference"))
    blast = next(c for c in cells if c.reference.code == "blast")
    for c in cells:
        _answer(client, a, c.image_id, "lymphocyte" if c == blast else c.reference.code)
    result = client.post(f"/api/competency/assignments/{a.pk}/submit/").json()["result"]
    assert result["agreement"] == pytest.approx(0.9)  # over the test's 80 % ...
    assert result["passed"] is False  # ... and failed all the same
    assert result["critical_misses"] == [{"position": blast.position, "reference": "blast", "called": "lymphocyte"}]


def test_roles_taker_sees_own_reviewer_sees_summary_lab_admin_signs_off(test_assigned, client, labeller, labeller2,
                                                                       reviewer, lab_admin):
    mine = Assignment.objects.get(person=labeller)
    theirs = Assignment.objects.get(person=labeller2)
    as_user(client, labeller)
    assert client.post(f"/api/competency/assignments/{mine.pk}/submit/").status_code == 200
    assert client.get(f"/api/competency/assignments/{theirs.pk}/").status_code == 403
    assert client.get(f"/competency/results/{theirs.pk}/").status_code == 404
    assert [x["id"] for x in client.get("/api/competency/assignments/").json()] == [mine.pk]
    assert client.get("/api/competency/assignments/?all=true").status_code == 403
    assert client.get("/api/competency/summary/").status_code == 403
    assert client.post("/api/competency/tests/create/", {}, content_type="application/json").status_code == 403
    assert client.post(f"/api/competency/assignments/{theirs.pk}/answers/",
                       {"image": 1, "cell_class": "blast"}, content_type="application/json").status_code == 403
    as_user(client, reviewer)
    summary = client.get("/api/competency/summary/").json()
    assert summary["counts"] == {"due": 1, "overdue": 0, "passed": 0, "failed": 1}
    assert client.get(f"/api/competency/assignments/{mine.pk}/").status_code == 403
    assert client.post(f"/api/competency/assignments/{mine.pk}/sign-off/").status_code == 403
    as_user(client, lab_admin)
    r = client.post(f"/api/competency/assignments/{mine.pk}/sign-off/", {"note": "reviewed"},
                    content_type="application/json")
    assert r.status_code == 200 and r.json()["signed_off_by"] == "admin1"
    assert client.post(f"/api/competency/assignments/{theirs.pk}/sign-off/").status_code == 409  # not submitted
    pdf = client.get(f"/competency/results/{mine.pk}/record.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    csv_text = client.get("/competency/export.csv").content.decode()
    assert csv_text.count("\n") == 3 and "lab1" in csv_text and "admin1" in csv_text
    actions = set(AuditEvent.objects.filter(action__startswith="competency.").values_list("action", flat=True))
    assert {"competency.test_create", "competency.test_freeze", "competency.assign", "competency.start",
            "competency.submit", "competency.sign_off", "competency.export"} <= actions


def test_the_taker_sees_open_tests_on_the_home_page(test_assigned, client, labeller, reviewer):
    as_user(client, labeller)
    home = client.get("/").content.decode()
    assert html_element(home, "open-tests") is not None and "Morphology 2026" in home
    as_user(client, reviewer)
    assert html_element(client.get("/").content.decode(), "open-tests") is None


def test_the_active_and_a_candidate_model_sit_the_test_with_referrals_apart(test_assigned, client, lab_admin):
    active = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    candidate = ModelVersionFactory(status=ModelVersion.Status.CANDIDATE)
    cells = list(test_assigned.cells.select_related("reference"))
    as_user(client, lab_admin)
    url = f"/api/competency/tests/{test_assigned.pk}/model-sittings/"
    waiting = client.post(url, {"model_version": active.pk}, content_type="application/json").json()
    assert waiting["result"] is None  # no call on the test's cells yet
    for i, c in enumerate(cells):
        PredictionFactory(image_id=c.image_id, model_version=active, top_class=c.reference.code, abstained=(i == 0))
        PredictionFactory(image_id=c.image_id, model_version=candidate,
                          top_class="lymphocyte" if c.reference.code == "blast" else c.reference.code)
    a = client.post(url, {"model_version": active.pk}, content_type="application/json").json()["result"]
    assert (a["correct"], a["referred"], a["agreement_called"]) == (9, 1, 1.0)
    b = client.post(url, {"model_version": candidate.pk}, content_type="application/json").json()["result"]
    assert b["correct"] == 7 and b["passed"] is False and len(b["critical_misses"]) == 3
    page = client.get(f"/competency/tests/{test_assigned.pk}/").content.decode()
    assert page.count('class="model-row"') == 2
    retired = ModelVersionFactory(status=ModelVersion.Status.RETIRED)
    assert client.post(url, {"model_version": retired.pk}, content_type="application/json").status_code == 400


def test_exports_hold_back_the_cells_of_a_test_open_for_the_exporting_lab_admin(client, lab, lab_admin, reviewer):
    """A lab admin sitting a test: the cell export leaves its cells out (and says so in the audit), the
    slide export refuses a slide holding one of them."""
    from annotations import exports
    from slides import exports as slide_exports
    from slides import services as slide_services
    from competency import services
    from tests.factories import SlideCellFactory, cell_class, verified_slide

    test = services.test_create(actor=reviewer, name="T", size=6, class_minimums={"blast": 3, "lymphocyte": 1}, pass_min_agreement=0.8,
                                critical_classes=["blast"], seed=3)
    services.test_assign(actor=reviewer, test=test, people=[lab_admin], due_date=timezone.localdate())
    in_test = set(test.cells.values_list("image_id", flat=True))
    export = exports.cells_export(selection=exports.cell_selection_clean(status="all"), actor=lab_admin, channel="cli")
    b"".join(export.chunks)
    assert export.counts["held_back_open_test"] == 6
    assert export.counts["images"] == CellImage.objects.filter(source="cell").count() - 6
    everyone = exports.cells_export(selection=exports.cell_selection_clean(status="all"), actor=reviewer, channel="cli")
    assert everyone.counts["images"] == export.counts["images"] + 6 and "held_back_open_test" not in everyone.counts

    slide = verified_slide(created_by=reviewer, code="EXP-1")
    SlideCellFactory(slide=slide, image_id=min(in_test), final_class=cell_class("blast"), changed_by=reviewer)
    slide_services.slide_sign(slide=slide, actor=reviewer, reason="test")
    with pytest.raises(Exception, match="proficiency test open for you"):
        slide_exports.slides_export(selection=slide_exports.slide_selection_clean(), actor=lab_admin, channel="cli")
    assert slide_exports.slides_export(selection=slide_exports.slide_selection_clean(), actor=reviewer,
                                       channel="cli").counts["slides"] == 1
    # nor do the slide's totals or its signed report in any format tell the taker that cell's class
    client.force_login(lab_admin)
    page = client.get(f"/slides/{slide.pk}/").content.decode()
    assert 'id="differential-withheld"' in page and "differential-table" not in page
    for path in ("report/", "report.csv", "report.pdf", "report.fhir.json", "report.hl7"):
        r = client.get(f"/slides/{slide.pk}/{path}")
        assert r.status_code == 403 and b"your open proficiency test" in r.content, (path, r.status_code)
    for fmt in ("json", "csv", "fhir", "hl7"):
        r = client.get(f"/api/slides/{slide.pk}/export/{fmt}/")
        assert r.status_code == 403 and "your open proficiency test" in r.json()["detail"], (fmt, r.status_code)
    assert client.get(f"/api/slides/{slide.pk}/").json()["differential"] is None
    client.force_login(reviewer)
    assert client.get(f"/slides/{slide.pk}/report/").status_code == 200
    assert client.get(f"/api/slides/{slide.pk}/export/json/").status_code == 200


def test_a_lab_admin_sitting_a_test_sees_neither_its_references_nor_its_cells_audit(admin_client, lab, lab_admin,
                                                                                   reviewer):
    from competency import services

    test = services.test_create(actor=reviewer, name="T", size=4, class_minimums={"blast": 2, "monocyte": 2},
                                pass_min_agreement=0.8, critical_classes=[], seed=3)
    assert admin_client.get(f"/api/competency/tests/{test.pk}/").status_code == 200
    cell = test.cells.first()
    marker = f"<td>CellImage {cell.image_id}</td>"
    assert marker in admin_client.get("/audit/").content.decode()
    services.test_assign(actor=reviewer, test=test, people=[lab_admin], due_date=timezone.localdate())
    assert admin_client.get(f"/api/competency/tests/{test.pk}/").status_code == 403
    page = admin_client.get(f"/competency/tests/{test.pk}/").content.decode()
    assert html_element(page, "sitting") is not None and html_element(page, "test-cells") is None
    assert marker not in admin_client.get("/audit/").content.decode()


def test_a_test_cell_disputed_again_after_freezing_stays_out_of_the_takers_review_and_unsure_queues(
        lab, reviewer, reviewer2, labeller):
    from annotations.selectors import adjudication_queue, labelling_queue
    from annotations.services import label_submit
    from competency import services
    from tests.factories import cell_class

    test = services.test_create(actor=reviewer2, name="T", size=4, class_minimums={"monocyte": 4},
                                pass_min_agreement=0.8, critical_classes=[], seed=1)
    services.test_assign(actor=reviewer2, test=test, people=[reviewer, labeller], due_date=timezone.localdate())
    cell = test.cells.first()
    image = CellImage.objects.get(pk=cell.image_id)
    label_submit(image=image, labeller=reviewer2, cell_class=cell_class("lymphocyte"), unsure=True)
    image.refresh_from_db()
    assert image.needs_review and image.final_label is None
    assert image in adjudication_queue(user=reviewer2)
    assert image not in adjudication_queue(user=reviewer)
    assert image not in labelling_queue(user=labeller, queue="unsure")
    assert cell.reference.code == "monocyte"  # the frozen test keeps its reference


def test_a_new_version_is_drawn_again_and_points_at_the_old_one(admin_client, lab):
    test = ProficiencyTest.objects.get(pk=build(admin_client).json()["id"])
    r = admin_client.post(f"/competency/tests/{test.pk}/new-version/")
    new = ProficiencyTest.objects.exclude(pk=test.pk).get()
    assert r.status_code == 302 and r.url == f"/competency/tests/{new.pk}/"
    assert (new.version, new.previous_id, new.class_minimums, new.critical_classes) == (
        2, test.pk, test.class_minimums, test.critical_classes)
    assert new.cells.count() == 10 and test.cells.count() == 10


def test_bad_assignments_are_refused_whole_and_leave_the_test_unfrozen(admin_client, lab, labeller, no_role_user):
    test_id = build(admin_client).json()["id"]
    url = f"/api/competency/tests/{test_id}/assign/"
    r = admin_client.post(url, {"people": ["lab1", "norole"], "due_date": DUE}, content_type="application/json")
    assert r.status_code == 400 and "norole" in r.content.decode()
    r = admin_client.post(url, {"people": ["lab1", "nobody"], "due_date": DUE}, content_type="application/json")
    assert r.status_code == 400 and "nobody" in r.content.decode()
    yesterday = (timezone.localdate() - datetime.timedelta(days=1)).isoformat()
    r = admin_client.post(url, {"people": ["lab1"], "due_date": yesterday}, content_type="application/json")
    assert r.status_code == 400 and "past" in r.content.decode()
    assert not Assignment.objects.exists() and not ProficiencyTest.objects.get(pk=test_id).frozen
    assert build(admin_client, size=0).status_code == 400
    assert build(admin_client, class_minimums={"no_such_class": 1}).status_code == 400
    assert build(admin_client, pass_min_agreement=1.5).status_code == 400
    assert ProficiencyTest.objects.count() == 1


def test_an_assignment_past_its_due_date_is_overdue_in_the_summary(test_assigned, client, reviewer):
    Assignment.objects.filter(person__username="lab1").update(due_date=timezone.localdate() - datetime.timedelta(days=1))
    as_user(client, reviewer)
    assert client.get("/api/competency/summary/").json()["counts"] == {"due": 1, "overdue": 1, "passed": 0, "failed": 0}
    page = client.get("/competency/summary/").content.decode()
    assert html_element(page, "count-overdue").text == "1"
