"""A held-out cell uploaded again in a cropped-cell slide, in headless Chromium: it leaks nothing of the
model's call to a labeller who has not read it (slide page and slide API), the reviewer verifies it
blind, and that verification is not a reading of the held-out cell."""
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from annotations import services as annotation_services
from annotations.models import Split
from slides import services
from slides.models import Slide
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory, UserFactory, cell_class
from tests.helpers import logged_in_page, png_bytes, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1366, "height": 900}


def test_a_heldout_cell_in_a_slide_leaks_nothing_and_its_verification_is_no_heldout_reading(browser, live_server,
                                                                                            tmp_path):
    u = {name: UserFactory(username=name, role=role) for name, role in
         (("lab1", "labeller"), ("lab2", "labeller"), ("rev1", "reviewer"), ("admin1", "lab_admin"))}
    version = ModelVersionFactory(status="active", activated_at=timezone.now(), classes=["monocyte", "lymphocyte"])
    files = {"held": png_bytes(color=(11, 22, 33), size=(64, 64)), "train": png_bytes(color=(44, 55, 66), size=(64, 64))}
    held = CellImageFactory(uploaded_by=u["admin1"], split=Split.HELDOUT, data=files["held"])
    train = CellImageFactory(uploaded_by=u["admin1"], data=files["train"])
    PredictionFactory(image=held, model_version=version, top_class="monocyte", confidence=0.87)
    PredictionFactory(image=train, model_version=version, top_class="lymphocyte", confidence=0.93)
    annotation_services.label_submit(image=held, labeller=u["lab1"], cell_class=cell_class("lymphocyte"))
    paths = []
    for name, data in files.items():
        (tmp_path / f"{name}.png").write_bytes(data)
        paths.append(str(tmp_path / f"{name}.png"))

    # the reviewer uploads both cells again, as a cropped-cell slide
    reviewer = logged_in_page(browser.new_context(viewport=WIDE), live_server, "rev1")
    reviewer.goto(f"{live_server.url}/slides/")
    reviewer.fill("input[name=code]", "BLIND-E2E")
    reviewer.select_option("select[name=kind]", "cells")
    reviewer.click("#slide-create button[type=submit]")
    reviewer.wait_for_selector("#field-upload")
    reviewer.set_input_files("#field-files", paths)
    with reviewer.expect_navigation():
        reviewer.click("#field-upload-submit")
    slide = Slide.objects.get(code="BLIND-E2E")
    assert sorted(slide.cells.values_list("image_id", flat=True)) == sorted([held.pk, train.pk])  # deduplicated
    services.slide_process(slide_id=slide.pk)  # the worker's job
    assert Slide.objects.get(pk=slide.pk).status == Slide.Status.READY

    # a labeller who has not read the held-out cell: nothing of the model's call, on the page or in the API
    labeller = logged_in_page(browser.new_context(viewport=WIDE), live_server, "lab2")
    labeller.goto(f"{live_server.url}/slides/{slide.pk}/")
    labeller.wait_for_selector("#differential-table")
    text = labeller.inner_text("main")
    assert "87%" not in text and "0.87" not in text
    assert labeller.inner_text("[data-count-for=monocyte]") == "0"  # not counted under the hidden call
    assert labeller.inner_text("#unresolved-message").startswith("1 cell(s) unidentified")
    screenshot(labeller, "slide-heldout-labeller")
    rows = {row["image"]: row for row in labeller.request.get(f"{live_server.url}/api/slides/{slide.pk}/cells/").json()}
    hidden = rows[held.pk]
    assert hidden["blind"] is True
    assert [hidden[f] for f in ("predicted_class", "top_class", "confidence", "final_class")] == [None] * 4
    assert (rows[train.pk]["predicted_class"], rows[train.pk]["confidence"]) == ("lymphocyte", 0.93)

    # the reviewer verifies it blind, with the unidentified cells, by its class key
    reviewer.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    held_cell = reviewer.locator("#group-unidentified .slide-cell.blind")
    expect(held_cell).to_have_count(1)
    assert held_cell.locator(".pre").inner_text() == "held-out: read blind"
    assert "87%" not in held_cell.inner_text() and "Monocyte" not in held_cell.locator(".pre").inner_text()
    assert reviewer.locator(".slide-cell:not(.blind) .pre").inner_text() == "model: Lymphocyte 93%"
    screenshot(reviewer, "slide-heldout-verify")
    held_id = held_cell.get_attribute("id")
    held_cell.click(position={"x": 20, "y": 20})
    reviewer.keyboard.press("m")
    reviewer.wait_for_selector(f"#group-monocyte #{held_id}")
    assert reviewer.inner_text("[data-count-for=monocyte]") == "1"  # the slide counts it as verified
    held.refresh_from_db()
    assert [lb.labeller.username for lb in held.labels.all()] == ["lab1"]  # not a reading of the held-out cell
    assert held.final_label is None and not held.needs_review
    # the held-out label is decided by the blind readings alone
    annotation_services.label_submit(image=held, labeller=u["lab2"], cell_class=cell_class("lymphocyte"))
    held.refresh_from_db()
    assert held.final_label.code == "lymphocyte"
    row = {r["image"]: r for r in labeller.request.get(f"{live_server.url}/api/slides/{slide.pk}/cells/").json()}[held.pk]
    assert (row["blind"], row["final_class"], row["predicted_class"]) == (True, None, None)
    assert not reviewer.js_errors and not labeller.js_errors
