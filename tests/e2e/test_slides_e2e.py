"""A slide of bccd-dev fields in headless Chromium: upload -> detection -> classification (a real
Celery worker) -> verification (keys, drag, forms) -> signed report."""
import pytest
from playwright.sync_api import expect

from slides.models import Slide
from tests.factories import TrainedModelVersionFactory
from tests.e2e.steps import classify_the_unidentified_cells
from tests.helpers import field_paths, logged_in_page, screenshot

EXPERT_COUNTED = "counted by the expert; not pre-classified by the model"


@pytest.mark.e2e
@pytest.mark.worker
def test_slide_from_upload_to_signed_report(live_server, browser, reviewer, every_cell_to_the_expert):
    page = logged_in_page(browser, live_server, reviewer.username)
    errors = page.js_errors

    page.goto(f"{live_server.url}/slides/")
    page.fill("input[name=code]", "Jane Doe")
    page.click("#slide-create button[type=submit]")
    assert "looks like a name" in page.inner_text("#error-code") or "not a name" in page.inner_text("#error-code")
    page.fill("input[name=code]", "E2E-0001")
    page.fill("input[name=wbc_count]", "7.2")
    page.click("#slide-create button[type=submit]")
    page.wait_for_selector("#field-upload")
    page.set_input_files("#field-files", [str(p) for p in field_paths(2)])
    page.click("#field-upload-submit")
    page.wait_for_selector("#differential-table", timeout=120_000)  # the page refreshes itself while processing
    slide = Slide.objects.get(code="E2E-0001")
    n_cells = slide.cells.count()
    assert n_cells >= 2 and page.locator(".cell-box").count() == n_cells
    screenshot(page, "slide-detail")

    page.click("#verify-link")
    page.wait_for_selector("#group-unidentified .slide-cell")
    assert page.is_disabled("#sign-button")
    # one cell by drag and drop onto the monocyte group; both must be on screen at once (the
    # browser's drag does not scroll the page under the pointer), as on a lab's monitor
    page.set_viewport_size({"width": 1280, "height": 1400})
    first = page.locator("#group-unidentified .slide-cell").first
    first_id = first.get_attribute("id")
    first.drag_to(page.locator("#group-monocyte"))
    page.wait_for_selector(f"#group-monocyte #{first_id}")
    # the rest with one key each
    classify_the_unidentified_cells(page)
    assert page.inner_text("[data-count-for=monocyte]") == "1"
    assert page.inner_text("#leukocyte-total") == str(n_cells)
    screenshot(page, "slide-verify")
    expect(page.locator("#sign-warnings")).to_be_visible()  # fewer cells than the target of 100
    page.fill("#sign-reason", "end-to-end test slide")
    page.click("#sign-button")
    page.wait_for_selector("#report")
    text = page.inner_text("#report")
    assert "E2E-0001" in text and "Monocyte" in text and "end-to-end test slide" in text
    screenshot(page, "slide-report")
    slide.refresh_from_db()
    assert slide.status == Slide.Status.SIGNED and slide.report["counts"]["monocyte"] == 1
    assert not errors, errors


@pytest.mark.e2e
def test_a_short_count_raises_no_flag_and_is_signed_with_a_reason_printed_in_the_pdf(
        live_server, browser, labeller, reviewer, tiny_checkpoint, reference_intervals, demo_cells):
    import io

    from pypdf import PdfReader

    from slides import services

    TrainedModelVersionFactory(result=tiny_checkpoint, activate=True)  # trained without blasts or atypical lymphocytes
    slide = services.slide_create(code="E2E-SHORT", created_by=labeller, kind=Slide.Kind.CELLS, wbc_count="7.0")
    files = [(p.name, p.read_bytes()) for code in ("lymphocyte", "monocyte")
             for p in sorted((demo_cells / code).iterdir())[:3]]
    services.slide_images_add(slide=slide, files=files, uploaded_by=labeller)
    assert services.slide_process(slide_id=slide.pk) is not None
    for cell in slide.cells.select_related("final_class"):  # the expert's classes; the browser does the sign-off
        services.slide_cell_reclassify(cell=cell, actor=reviewer, target="lymphocyte" if cell.pk % 2 else "monocyte")

    page = logged_in_page(browser, live_server, reviewer.username)
    errors = page.js_errors
    page.goto(f"{live_server.url}/slides/{slide.pk}/")
    messages = page.inner_text("#diff-messages")
    assert "Insufficient count (6 of 100)" in messages
    assert page.locator("#diff-messages .flag").count() == 0  # 6 cells: no automatic flag at all
    # the reviewer verified every cell: no blast and no atypical lymphocyte among them is the expert's count
    assert page.inner_text("[data-pct-for=blast]") == "0.0"
    assert page.inner_text("[data-note-for=atypical_lymphocyte]") == EXPERT_COUNTED
    screenshot(page, "slide-short-count")

    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    expect(page.locator("#sign-warnings")).to_be_visible()
    assert "Insufficient count: 6 of the target 100" in page.inner_text("#sign-warning-list")
    page.click("#sign-button")  # no reason yet: the browser does not submit
    assert page.url.endswith(f"/slides/{slide.pk}/verify/")
    slide.refresh_from_db()
    assert slide.status != Slide.Status.SIGNED
    page.fill("#sign-reason", "Leukopenic sample; 6 cells is all the smear holds")
    page.click("#sign-button")
    page.wait_for_selector("#report")
    assert "Leukopenic sample; 6 cells is all the smear holds" in page.inner_text("#sign-reason")
    assert "6 cropped cell image(s) uploaded" in page.inner_text("#method")
    screenshot(page, "slide-signed-with-reason")
    response = page.request.get(f"{live_server.url}/slides/{slide.pk}/report.pdf")
    assert response.ok and response.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(response.body())).pages)
    assert "Leukopenic sample; 6 cells is all the smear holds" in text
    assert "Insufficient count (6 of 100)" in text
    assert f"Blast ({EXPERT_COUNTED})" in " ".join(text.split())  # the name cell wraps
    slide.refresh_from_db()
    assert slide.status == Slide.Status.SIGNED and slide.sign_reason.startswith("Leukopenic sample")
    assert not errors, errors


@pytest.mark.e2e
def test_a_fully_verified_slide_reports_blast_zero_with_its_interval_on_the_page_and_in_every_format(
        live_server, browser, labeller, reviewer, tiny_checkpoint, reference_intervals, demo_cells):
    """The model has no blasts and no atypical lymphocytes: while a cell is unverified they are "not
    assessed"; once the reviewer has verified the last one (in the browser), 0 blasts is the expert's
    count, with its interval, on the page, the report, the PDF, the FHIR and the HL7 message."""
    import io
    import json

    from django.template.defaultfilters import floatformat
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message
    from pypdf import PdfReader

    from slides import services, stats
    from slides.hl7 import TABLE_0078

    TrainedModelVersionFactory(result=tiny_checkpoint, activate=True)  # trained without blasts or atypical lymphocytes
    slide = services.slide_create(code="E2E-ZERO", created_by=labeller, kind=Slide.Kind.CELLS, wbc_count="7.0")
    files = [(p.name, p.read_bytes()) for code in ("lymphocyte", "monocyte")
             for p in sorted((demo_cells / code).iterdir())[:3]]
    services.slide_images_add(slide=slide, files=files, uploaded_by=labeller)
    assert services.slide_process(slide_id=slide.pk) is not None
    *first, last = slide.cells.order_by("id")
    for cell in first:
        services.slide_cell_reclassify(cell=cell, actor=reviewer, target="lymphocyte")
    high = floatformat(stats.proportion_interval(0, 6)[1], 1)  # 0 of 6 leukocytes: 0.0–39.0 %

    page = logged_in_page(browser, live_server, reviewer.username, viewport={"width": 1366, "height": 1000})
    errors = page.js_errors
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    expect(page.locator("[data-pct-for=blast]")).to_have_text("not assessed by the model — expert only")
    expect(page.locator("[data-ci-for=blast]")).to_have_count(0)
    page.locator(f"#cell-{last.pk}").click(position={"x": 20, "y": 20})
    page.keyboard.press("m")  # the last cell: a monocyte
    expect(page.locator(f"#cell-{last.pk} .verified-mark")).to_be_visible()
    expect(page.locator("[data-pct-for=blast]")).to_have_text("0.0")
    expect(page.locator("[data-ci-for=blast]")).to_have_text(f"0.0–{high}")
    expect(page.locator("[data-note-for=blast]")).to_have_text(EXPERT_COUNTED)
    expect(page.locator("[data-note-for=atypical_lymphocyte]")).to_have_text(EXPERT_COUNTED)
    screenshot(page, "slide-verified-blast-zero")
    page.fill("#sign-reason", "Leukopenic sample")
    page.click("#sign-button")
    page.wait_for_selector("#report")
    assert page.inner_text("#report [data-pct-for=blast]") == "0.0"
    assert page.inner_text("#report [data-ci-for=blast]") == f"0.0–{high}"
    rule = page.locator("#reference-table tr[data-codes=blast][data-measure=percent]")
    expect(rule.locator("td").nth(1)).to_have_text("0.00")
    expect(rule.locator(".rule-note")).to_have_text(EXPERT_COUNTED)

    pdf = page.request.get(f"{live_server.url}/slides/{slide.pk}/report.pdf")
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages).split())
    assert f"Blast ({EXPERT_COUNTED}) 0 0.0 0.0–{high}" in text and "not assessed" not in text

    fhir = json.loads(page.request.get(f"{live_server.url}/slides/{slide.pk}/report.fhir.json").body())
    DiagnosticReport.model_validate(fhir)
    blast = next(o for o in fhir["contained"] if o["code"]["coding"][0]["code"] == "26446-5")
    assert blast["valueQuantity"]["value"] == 0.0 and blast["note"] == [{"text": EXPERT_COUNTED}]
    interval = next(c["valueRange"] for c in blast["component"] if c["code"]["text"] == "95% confidence interval")
    assert interval["low"]["value"] == 0.0 and interval["high"]["value"] == stats.proportion_interval(0, 6)[1]

    hl7 = page.request.get(f"{live_server.url}/slides/{slide.pk}/report.hl7").body().decode()
    msg = parse_message(hl7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    observations = list(msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION)
    assert all(o.OBX.obx_8.to_er7() in TABLE_0078 | {""} for o in observations)
    blast = next(o for o in observations if o.OBX.obx_3.obx_3_1.to_er7() == "26446-5")
    assert blast.OBX.obx_5.to_er7() == "0" and blast.OBX.obx_11.to_er7() == "F"
    assert blast.OBX.obx_8.to_er7() == ""  # 6 of 100 leukocytes: indeterminate, said in the NTE
    notes = [c.nte_3.to_er7() for c in blast.children if c.name == "NTE"]
    assert notes[0].startswith("No abnormal flag (indeterminate): insufficient count")
    assert EXPERT_COUNTED in notes and f"95% confidence interval 0-{stats.proportion_interval(0, 6)[1]:g} %" in notes
    assert not errors, errors


@pytest.mark.e2e
def test_a_slide_from_another_microscope_is_flagged_and_raises_no_flag_until_every_cell_is_verified(
        live_server, browser, reviewer, pbc_checkpoint, reference_intervals):
    """A model trained on PBC cells (CellaVision, May-Grünwald-Giemsa) meets BCCD fields: every cell
    is referred as unlike the training images, the slide says so, and no flag is raised until the
    reviewer has verified every cell."""
    from slides import services

    TrainedModelVersionFactory(result=pbc_checkpoint, activate=True)
    slide = services.slide_create(code="E2E-FOREIGN", created_by=reviewer, wbc_count="6.0")
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(5)],
                              uploaded_by=reviewer)
    Slide.objects.filter(pk=slide.pk).update(task_state=Slide.TaskState.QUEUED)
    services.slide_process(slide_id=slide.pk)
    page = logged_in_page(browser, live_server, reviewer.username, viewport={"width": 1366, "height": 900})
    errors = page.js_errors
    page.goto(f"{live_server.url}/slides/{slide.pk}/")
    expect(page.locator("#domain-banner")).to_contain_text("unlike the images the model was trained on")
    page.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    expect(page.locator("#domain-banner")).to_be_visible()
    cells = page.locator("#group-unidentified .slide-cell")
    n = cells.count()
    assert n >= 5
    expect(page.locator("#group-unidentified .reason.ood").first).to_have_text("referred: unlike the training images")
    expect(page.locator("#group-unidentified .verified-mark").first).to_be_hidden()  # nobody has verified it yet
    screenshot(page, "slide-verify-foreign")
    # the reviewer reads each cell: all but one as neutrophils with the key, flags still withheld
    hotkey = page.locator("#group-neutrophil_segmented h2 kbd").inner_text().strip()
    for _ in range(n - 1):
        remaining = cells.count()
        cells.first.click(position={"x": 20, "y": 20})
        page.keyboard.press(hotkey)
        expect(cells).to_have_count(remaining - 1)
    expect(page.locator("#flags-suppressed")).to_contain_text(
        "1 cell(s) are waiting for an expert's verification and are not among the leukocytes counted yet")
    expect(page.locator("#sign-warnings")).to_contain_text("Automatic flags are withheld")
    cells.first.click(position={"x": 20, "y": 20})
    page.keyboard.press(hotkey)
    expect(cells).to_have_count(0)
    expect(page.locator("#flags-suppressed")).to_have_count(0)
    expect(page.locator("#group-neutrophil_segmented .verified-mark").first).to_be_visible()
    screenshot(page, "slide-verify-foreign-verified")
    assert not errors, errors
