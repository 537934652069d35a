"""The platelet estimate in headless Chromium: bccd fields uploaded -> white cells, platelets and red
cells found by a real Celery worker -> the estimate and the boxes (toggled) on the verification
screen -> a field's platelet count corrected -> the signed report carries the corrected estimate;
the estimate refused until the factor is calibrated, and a foreign slide's platelet flag withheld
in every format."""
import io

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from playwright.sync_api import expect
from pypdf import PdfReader

from annotations.models import AuditEvent, LabSettings
from slides import services
from slides.models import Slide
from slides.selectors import slide_differential
from tests.e2e.steps import classify_the_unidentified_cells
from tests.factories import TrainedModelVersionFactory
from tests.helpers import field_paths, logged_in_page, screenshot
from tests.slides.test_platelets import lab_turns_estimate_on, platelet_fields, platelet_reference_interval


@pytest.mark.e2e
@pytest.mark.worker
def test_platelet_estimate_from_upload_to_signed_report(live_server, browser, reviewer, every_cell_to_the_expert):
    lab_turns_estimate_on(factor=20.0)
    page = logged_in_page(browser, live_server, reviewer.username)
    errors = page.js_errors

    page.goto(f"{live_server.url}/slides/")
    page.fill("input[name=code]", "E2E-PLT-0001")
    page.click("#slide-create button[type=submit]")
    page.wait_for_selector("#field-upload")
    page.set_input_files("#field-files", [str(p) for p in platelet_fields(2)])
    page.click("#field-upload-submit")
    page.wait_for_selector("#differential-table", timeout=120_000)
    slide = Slide.objects.get(code="E2E-PLT-0001")
    fields = list(slide.fields.order_by("position"))
    assert all(f.platelet_count is not None and f.red_cell_count for f in fields)

    page.click("#verify-link")
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.wait_for_selector("#verify-platelets")
    n_boxes = sum(len(f.platelet_boxes) for f in fields)
    assert page.locator("svg.boxes rect.platelet-box").count() == n_boxes
    assert page.locator("svg.boxes rect.rbc-box").count() == sum(len(f.red_cell_boxes) for f in fields)
    expect(page.locator("svg.boxes").first).to_be_visible()
    page.uncheck("#toggle-boxes")  # the reviewer hides the boxes...
    expect(page.locator("svg.boxes").first).to_be_hidden()
    page.check("#toggle-boxes")  # ...and shows them again
    expect(page.locator("svg.boxes").first).to_be_visible()
    screenshot(page, "slide-verify-platelets")

    # correct the first field's platelet count
    first = fields[0]
    corrected = first.platelet_count + 5
    page.fill(f"#platelets-{first.pk}", str(corrected))
    page.click(f"#platelet-field-{first.pk} button[type=submit]")
    page.wait_for_selector(f"#platelet-field-{first.pk} .platelets-corrected")
    assert f"corrected to {corrected}" in page.inner_text(f"#platelet-field-{first.pk}")
    assert AuditEvent.objects.filter(action="slide.platelets_correct", target_id=str(first.pk)).count() == 1
    counts = [corrected] + [f.platelet_count for f in fields[1:]]
    mean = sum(counts) / len(counts)
    assert f"{20 * mean:.0f} 10^9/L" in page.inner_text("#platelet-estimate")

    # classify every cell (one key each) and sign
    classify_the_unidentified_cells(page)
    page.fill("#sign-reason", "platelet end-to-end test")
    page.click("#sign-button")
    page.wait_for_selector("#report")
    assert f"{20 * mean:.0f} 10^9/L" in page.inner_text("#platelet-estimate")
    assert "Red cells per field" in page.inner_text("#red-cells")
    screenshot(page, "slide-report-platelets")
    slide.refresh_from_db()
    assert slide.status == Slide.Status.SIGNED and slide.report["platelets"]["per_field"] == counts
    assert not errors, errors


@pytest.mark.e2e
def test_the_estimate_needs_a_calibrated_factor_and_a_foreign_slides_platelet_flag_is_withheld(
        live_server, browser, lab_admin, reviewer, pbc_checkpoint, reference_intervals):
    """A lab admin cannot turn the estimate on before calibrating the factor, calibrates it from ten
    slides and turns it on; on a slide of fields foreign to the model (BCCD fields, a model trained on
    PBC cells) the platelet estimate lies wholly below the reference interval, yet no platelet flag
    is raised while automatic flags are withheld: not on the verification screen, not in the
    signing checklist, and not in the signed report's page, PDF, FHIR or HL7."""
    platelet_reference_interval()
    admin = logged_in_page(browser, live_server, lab_admin.username)
    errors = admin.js_errors
    admin.goto(f"{live_server.url}/slides/platelet-settings/")
    expect(admin.locator("#platelet-factor")).to_contain_text("No factor yet")
    admin.check("#platelet-enabled")
    admin.click("#platelet-settings-save")
    expect(admin.locator(".messages .error")).to_contain_text(
        "cannot be turned on before the factor is calibrated for this lab's camera field")
    expect(admin.locator("#platelet-enabled")).not_to_be_checked()
    assert not LabSettings.get().platelet_estimate
    # ten slides: the analyser's count and the mean platelets per field (about 10 x 10^9/L per platelet)
    pairs = [(52, 5.1), (98, 9.6), (151, 15.4), (203, 19.8), (248, 25.3), (305, 29.7), (149, 14.6), (99, 10.2),
             (180, 18.3), (260, 25.8)]
    admin.fill("#platelet-pairs", "\n".join(f"{y}, {x}" for y, x in pairs))
    admin.click("#platelet-preview")
    expect(admin.locator("#platelet-preview-result")).to_contain_text("From 10 slides: factor")
    assert LabSettings.get().platelet_factor is None  # shown, not stored
    admin.click("#platelet-calibrate")
    expect(admin.locator("#platelet-factor")).to_contain_text("calibrated on 10 slides")
    expect(admin.locator("#platelet-factor")).to_contain_text(f"by {lab_admin.username}")
    lab = LabSettings.get()
    assert lab.platelet_factor == pytest.approx(10.0, abs=0.3) and lab.platelet_calibrated_by == lab_admin
    admin.check("#platelet-enabled")
    admin.click("#platelet-settings-save")
    expect(admin.locator(".messages .success")).to_contain_text("Platelet estimate settings saved")
    expect(admin.locator("#platelet-enabled")).to_be_checked()
    screenshot(admin, "platelet-settings-calibrated")
    assert LabSettings.get().platelet_estimate

    TrainedModelVersionFactory(result=pbc_checkpoint, activate=True)
    slide = services.slide_create(code="E2E-PLT-FOREIGN", created_by=reviewer)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(5)],
                              uploaded_by=reviewer)
    Slide.objects.filter(pk=slide.pk).update(task_state=Slide.TaskState.QUEUED)
    services.slide_process(slide_id=slide.pk)
    plt = slide_differential(slide=slide)["platelets"]
    assert plt["estimate_interval"][1] < 150  # wholly below the reference interval: a flag, were it not withheld

    page = logged_in_page(browser, live_server, reviewer.username, viewport={"width": 1366, "height": 1000})
    errors += page.js_errors
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    expect(page.locator("#domain-banner")).to_be_visible()
    expect(page.locator("#platelet-flag")).to_have_attribute("data-status", "suppressed")
    expect(page.locator("#platelet-flag")).to_contain_text("No automatic flag: the images are unlike")
    expect(page.locator("#sign-platelet-estimate")).to_contain_text("flag withheld")
    expect(page.locator("#sign-platelet-calibration")).to_contain_text(f"calibrated on 10 slides on")
    expect(page.locator("#flag-summary")).to_have_text("No flags.")
    screenshot(page, "slide-verify-foreign-platelets")
    # the reviewer reads every cell; fewer than the target were counted, so the flag stays withheld
    classify_the_unidentified_cells(page)
    expect(page.locator("#sign-platelet-estimate")).to_contain_text("flag withheld — Insufficient count")
    page.fill("#sign-reason", "five foreign fields, platelets read by eye")
    page.click("#sign-button")
    page.wait_for_selector("#report")
    expect(page.locator("#platelet-flag")).to_have_attribute("data-status", "insufficient")
    expect(page.locator("#platelet-flag")).not_to_contain_text("Possible thrombocytopenia")
    expect(page.locator("#flag-summary")).to_have_text("No flags.")
    screenshot(page, "slide-report-foreign-platelets")

    base = f"{live_server.url}/slides/{slide.pk}"
    pdf = PdfReader(io.BytesIO(page.request.get(f"{base}/report.pdf").body()))
    first_page, whole = pdf.pages[0].extract_text(), "".join(p.extract_text() for p in pdf.pages)
    assert "No flags." in first_page and "Platelet estimate" in whole and "Possible thrombocytopenia" not in whole
    fhir = page.request.get(f"{live_server.url}/api/slides/{slide.pk}/export/fhir/").json()
    DiagnosticReport.model_validate(fhir)
    obs = next(o for o in fhir["contained"] if o["code"]["coding"][0]["code"] == "49497-1")
    assert [c["code"] for i in obs["interpretation"] for c in i["coding"]] == ["IND"]
    assert "No flags." in fhir["conclusion"] and "Possible thrombocytopenia" not in fhir["conclusion"]
    msg = parse_message(page.request.get(f"{live_server.url}/api/slides/{slide.pk}/export/hl7/").text()
                        .replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    obx = next(o.OBX for o in order.ORU_R01_OBSERVATION if o.OBX.obx_3.obx_3_1.to_er7() == "49497-1")
    assert float(obx.obx_5.to_er7()) == Slide.objects.get(pk=slide.pk).report["platelets"]["estimate"]
    assert obx.obx_8.to_er7() != "L"
    notes = [n.nte_3.to_er7() for n in order.children if n.name == "NTE"]
    assert "No flags." in notes and not any("Possible thrombocytopenia" in n for n in notes)
    assert not errors, errors
