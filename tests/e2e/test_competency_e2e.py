"""A proficiency test end to end in headless Chromium: a lab admin builds a stratified test from the
lab's decided cells (one adjudicated) and assigns it to two labellers; one takes it with the keyboard
(the labelling API and a slide show them no reference label while it is open), leaves and resumes,
submits; the score, kappa, interval and confusion matrix are the hand-computed ones and the blast
called a lymphocyte fails the test; the model sits the same test; the lab admin signs the PDF record off."""
import datetime
import io

import pytest
from django.utils import timezone
from pypdf import PdfReader

from classifier.models import ModelVersion
from competency.models import Assignment, ProficiencyTest
from tests.competency.conftest import decided_lab
from tests.e2e.steps import open_page, poll, users
from tests.factories import ModelVersionFactory, PredictionFactory, SlideCellFactory, SlideFactory, cell_class
from tests.helpers import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
KEYS = {"lymphocyte": "l", "monocyte": "m", "blast": "t"}


def csrf(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")


def test_a_proficiency_test_from_build_to_signed_record(browser, live_server):
    u = users()
    lab = decided_lab(uploaded_by=u["admin1"])
    admin = open_page(browser, live_server, "admin1")

    # build: 8 cells, 3 lymphocytes, 3 monocytes, 2 blasts (every minimum drawn, so the mix is fixed)
    admin.goto(f"{live_server.url}/competency/")
    admin.click("#build-test")
    admin.fill("input[name=name]", "Morphology 2026")
    admin.fill("input[name=size]", "8")
    admin.fill("input[name=pass_min_agreement]", "0.7")
    admin.fill("input[name=seed]", "11")
    admin.fill("input[name=min_lymphocyte]", "3")
    admin.fill("input[name=min_monocyte]", "3")
    admin.fill("input[name=min_blast]", "9")  # more than the lab has: named, nothing built
    admin.click("#build-form button[type=submit]")
    assert "blast: 3 decided cell(s), 9 wanted" in admin.inner_text("#build-form")
    assert not ProficiencyTest.objects.exists()
    admin.fill("input[name=min_blast]", "2")
    admin.check("input[name=critical_classes][value=blast]")
    admin.click("#build-form button[type=submit]")
    test = ProficiencyTest.objects.get()
    admin.wait_for_url(f"{live_server.url}/competency/tests/{test.pk}/")
    assert admin.inner_text("#test-seed") == "11"
    cells = list(test.cells.select_related("reference").order_by("position"))
    refs = [c.reference.code for c in cells]
    assert sorted(refs) == ["blast"] * 2 + ["lymphocyte"] * 3 + ["monocyte"] * 3
    assert all(c.image_id in lab.decided[c.reference.code] for c in cells)

    # assign to both labellers
    admin.check("#assign-form input[type=checkbox] >> nth=0")  # the list is by user name: admin1 ...
    admin.uncheck("#assign-form input[type=checkbox] >> nth=0")
    for name in ("lab1", "lab2"):
        admin.check(f"#assign-form label:has-text('{name}') input")
    admin.fill("#assign-form input[name=due_date]", (timezone.localdate() + datetime.timedelta(days=7)).isoformat())
    admin.click("#assign-form button[type=submit]")
    admin.wait_for_selector("#assignments tbody tr >> nth=1")
    assert sorted(Assignment.objects.values_list("person__username", flat=True)) == ["lab1", "lab2"]
    test.refresh_from_db()
    assert test.frozen

    # one of the test's cells sits, verified, on a slide
    blast_cell = next(c for c in cells if c.reference.code == "blast")
    slide = SlideFactory(created_by=u["rev1"])
    SlideCellFactory(slide=slide, image_id=blast_cell.image_id, final_class=cell_class("blast"), changed_by=u["rev1"])

    # lab1 finds the test on the home page and takes it with the keyboard
    taker = open_page(browser, live_server, "lab1")
    taker.click("#open-tests a")
    taker.wait_for_selector("#label-grid[data-mode=exam] .lcell")
    assert taker.locator(".lcell").count() == 8 and taker.locator(".lcell[data-suggest]").count() == 0
    assert taker.locator(".lcell a.open").count() == 0  # no way to the cell's labelling page
    # while it is open: no reference label through the labelling API or the slide
    for c in cells:
        assert taker.request.get(f"{live_server.url}/api/images/{c.image_id}/").json()["final_label"] is None
    row = {r["image"]: r for r in taker.request.get(f"{live_server.url}/api/slides/{slide.pk}/cells/").json()}
    assert row[blast_cell.image_id]["final_class"] is None
    assert taker.request.post(f"{live_server.url}/api/labels/", data={"image": blast_cell.image_id,
                                                                     "cell_class": "blast"},
                              headers={"X-CSRFToken": csrf(taker)}).status == 409

    # answers: every cell its reference's key, but the second blast called a lymphocyte and the third
    # monocyte marked "not sure" (Shift); half-way the taker leaves and comes back
    blasts = [i for i, r in enumerate(refs) if r == "blast"]
    monos = [i for i, r in enumerate(refs) if r == "monocyte"]
    for i, code in enumerate(refs):
        if i == 4:
            poll(taker, lambda: taker.get_attribute("#label-grid", "data-pending") == "0", message="saved")
            taker.goto(f"{live_server.url}/")
            taker.click("#open-tests a")
            taker.wait_for_selector("#label-grid[data-mode=exam] .lcell")
            assert taker.inner_text("#done-count") == "4"  # resumed, at the first cell without an answer
            assert taker.evaluate("() => document.activeElement.dataset.image") == str(cells[4].image_id)
        taker.wait_for_timeout(60)
        key = "l" if i == blasts[1] else KEYS[code]
        taker.keyboard.press(f"Shift+{key.upper()}" if i == monos[2] else key)
    poll(taker, lambda: taker.get_attribute("#label-grid", "data-pending") == "0", message="saved")
    assert taker.inner_text("#done-count") == "8"
    taker.keyboard.press("Enter")  # no model call in a test
    assert "no model call" in taker.inner_text("#save-status")
    screenshot(taker, "competency-exam")
    with taker.expect_navigation():
        taker.click("#exam-submit button")
    a = Assignment.objects.get(person__username="lab1")
    assert a.status == "submitted" and all(x.seconds > 0 for x in a.answers.all())

    # hand-computed: 6 / 8 right; rows L [3 0 0 0], M [0 2 0 1], B [1 0 1 0]; p_e = (3·4 + 3·2 + 2·1) / 64
    assert taker.inner_text("#agreement") == "6 / 8"
    assert taker.inner_text("#kappa") == f"{(0.75 - 20 / 64) / (1 - 20 / 64):.3f}" == "0.636"
    assert taker.inner_text("#agreement-ci") == "0.409–0.929"  # Wilson, z = 1.96
    assert taker.inner_text("#not-sure") == "1"
    matrix = [r.split("\t")[1:] for r in taker.locator("#confusion tbody tr").all_inner_texts()]
    assert matrix == [["3", "0", "0", "0"], ["0", "2", "0", "1"], ["1", "0", "1", "0"]]
    sens = taker.locator("#per-class tr[data-class=blast] .sensitivity").inner_text()
    assert sens == "0.500"
    verdict = taker.inner_text("#verdict")
    assert verdict.startswith("Failed") and "blast (critical) called lymphocyte" in verdict  # 75 % ≥ 70 % alone
    assert taker.locator(".missed").count() == 2
    assert taker.request.get(f"{live_server.url}/api/images/{blast_cell.image_id}/").json()["final_label"] == "blast"
    screenshot(taker, "competency-result")

    # the model sits the same test (one referral, counted not correct and reported apart)
    version = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    for i, c in enumerate(cells):
        PredictionFactory(image_id=c.image_id, model_version=version, top_class=c.reference.code, abstained=(i == 0))
    admin.goto(f"{live_server.url}/competency/tests/{test.pk}/")
    admin.click("#model-sit-form button")
    admin.wait_for_selector(".model-row .agreement")
    assert admin.inner_text(".model-row .agreement") == "7 / 8"
    assert admin.inner_text(".model-row .referred") == "1"
    assert admin.locator(".staff-row").count() == 1

    # the lab admin signs lab1's record off; the PDF renders
    admin.goto(f"{live_server.url}/competency/results/{a.pk}/")
    admin.fill("#sign-off-form input[name=note]", "discussed the blast")
    admin.click("#sign-off-form button")
    admin.wait_for_selector("#signed-off")
    pdf = admin.request.get(f"{live_server.url}/competency/results/{a.pk}/record.pdf")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF")
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    for expected in ("lab1", "FAILED", "blast (critical) called lymphocyte", "6 / 8 = 75.0 %", "Cohen's kappa\n0.636",
                     "Signed off by admin1", "discussed the blast"):
        assert expected in text, expected
    admin.goto(f"{live_server.url}/competency/summary/")
    assert admin.inner_text("#count-failed") == "1" and admin.inner_text("#count-due") == "1"
    assert "Blast" in admin.inner_text("#summary-confusions")
    assert taker.js_errors == [] and admin.js_errors == []
