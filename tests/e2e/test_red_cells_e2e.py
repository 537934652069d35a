"""Red-cell morphology in headless Chromium: a reviewer grades schistocytes (by their percentage:
0.6 % is 1+) and target cells 2+ on the verification screen, beside the slide's field, signs, and the
grades reach the report page, the PDF, FHIR (validated) and HL7 (parsed back)."""
import io
import json

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from playwright.sync_api import expect
from pypdf import PdfReader

from annotations.models import AuditEvent
from slides import services
from slides.models import RedCellGrade, Slide
from tests.e2e.steps import classify_the_unidentified_cells
from tests.factories import TrainedModelVersionFactory
from tests.helpers import field_paths, logged_in_page, screenshot


@pytest.mark.e2e
def test_a_reviewer_grades_red_cells_and_the_grades_reach_every_format(
        live_server, browser, labeller, reviewer, tiny_checkpoint, reference_intervals):
    TrainedModelVersionFactory(result=tiny_checkpoint, activate=True)
    slide = services.slide_create(code="E2E-RBC-1", created_by=labeller)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    assert services.slide_process(slide_id=slide.pk) is not None
    field = slide.fields.get()

    page = logged_in_page(browser, live_server, reviewer.username)
    errors = page.js_errors
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    section = page.locator("#verify-red-cells")
    expect(section.locator(f"#red-cell-field-{field.pk} img")).to_be_visible()  # the field to grade from
    assert section.locator(f"#red-cell-field-{field.pk}").get_attribute("href").endswith(
        f"/images/{field.image_id}/file/")  # opens the field at its native resolution
    classify_the_unidentified_cells(page)
    page.fill("#sign-reason", "red-cell end-to-end test")
    page.select_option("#grade-target_cells", "2+")
    page.fill("#percent-schistocytes", "0.6")
    page.click("#sign-button")  # grades changed but not saved: signing would leave them out
    expect(page.locator("#red-cells-unsaved")).to_be_visible()
    assert Slide.objects.get(pk=slide.pk).status != Slide.Status.SIGNED
    page.click("#red-cell-save")
    page.wait_for_url("**/verify/#verify-red-cells")
    expect(page.locator(".rbc-finding[data-finding=schistocytes] .rbc-current")).to_have_text(
        f"graded 1+ (few; 0.6 % of red cells) by {reviewer.username}")
    expect(page.locator("#grade-target_cells")).to_have_value("2+")
    assert AuditEvent.objects.filter(action="slide.red_cells_grade", target_id=str(slide.pk)).count() == 1
    screenshot(page, "slide-verify-red-cells")

    page.fill("#sign-reason", "red-cell end-to-end test")
    page.click("#sign-button")
    page.wait_for_selector("#report")
    rows = page.locator("#red-cell-table tbody tr")
    expect(rows).to_have_count(2)  # only the graded findings
    expect(page.locator("tr[data-finding=target_cells] .rbc-grade")).to_have_text("2+ (moderate)")
    expect(page.locator("tr[data-finding=schistocytes] .rbc-grade")).to_have_text("1+ (few; 0.6 % of red cells)")
    screenshot(page, "slide-report-red-cells")

    pdf = page.request.get(f"{live_server.url}/slides/{slide.pk}/report.pdf")
    assert pdf.ok
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages).split())
    assert "Red-cell morphology" in text
    assert "Target cells: 2+ (moderate)." in text and "Schistocytes: 1+ (few; 0.6 % of red cells)." in text

    doc = json.loads(page.request.get(f"{live_server.url}/slides/{slide.pk}/report.fhir.json").text())
    DiagnosticReport.model_validate(doc)
    obs = {o["code"]["coding"][0]["code"]: o for o in doc["contained"]}
    assert obs["10381-2"]["valueCodeableConcept"]["coding"][0]["code"] == "2+"
    assert obs["schistocytes"]["valueCodeableConcept"]["coding"][0]["code"] == "1+"
    assert obs["schistocytes"]["component"][0]["valueQuantity"]["value"] == 0.6

    msg = parse_message(page.request.get(f"{live_server.url}/slides/{slide.pk}/report.hl7").text(),
                        validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    obx = {o.OBX.obx_3.obx_3_1.to_er7(): o.OBX
           for o in msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION}
    assert (obx["10381-2"].obx_2.to_er7(), obx["10381-2"].obx_5.obx_5_1.to_er7()) == ("CWE", "2+")
    assert obx["schistocytes"].obx_5.to_er7().split("^")[:1] == ["1+"]

    slide.refresh_from_db()
    assert slide.status == Slide.Status.SIGNED
    # signed: the screen shows the grades read-only; the service refuses a change
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    expect(page.locator("#red-cell-form")).to_have_count(0)
    expect(page.locator("#red-cell-grades li[data-finding=target_cells]")).to_have_text("Target cells: 2+ (moderate)")
    assert RedCellGrade.objects.filter(slide=slide).count() == 2
    assert not errors, errors
