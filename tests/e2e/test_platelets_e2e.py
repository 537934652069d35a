"""The platelet estimate in headless Chromium: bccd fields uploaded -> white cells, platelets and red
cells found by a real Celery worker -> the estimate and the boxes (toggled) on the verification
screen -> a field's platelet count corrected -> the signed report carries the corrected estimate."""
import pytest
from playwright.sync_api import expect

from annotations.models import AuditEvent
from slides.models import Slide
from tests.e2e.steps import classify_the_unidentified_cells
from tests.helpers import logged_in_page, screenshot
from tests.slides.test_platelets import lab_turns_estimate_on, platelet_fields


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
