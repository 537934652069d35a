"""Report comments and two-step release in headless Chromium: the lab admin turns two-step release on,
one reviewer verifies and submits with a comment, the same reviewer is refused the release, a second
reviewer releases; the comment and both names reach the report page, the PDF, FHIR and HL7."""
import io

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from playwright.sync_api import expect
from pypdf import PdfReader

from annotations.models import AuditEvent, LabSettings
from slides.models import Slide
from tests.factories import verified_slide
from tests.helpers import logged_in_page, screenshot

DRAFT = "Draft: lymphocytes look reactive."
COMMENT = 'Reactive lymphocytes, <b>no</b> blasts & "smudge" cells | repeat the CBC in 2 weeks.'


@pytest.mark.e2e
def test_two_step_release_with_a_comment_reaches_every_format(live_server, browser, lab_admin, reviewer, reviewer2):
    admin = logged_in_page(browser, live_server, lab_admin.username)
    admin.goto(f"{live_server.url}/settings/labelling/")
    admin.check("input[name=two_step_release]")
    admin.click("#lab-settings button[type=submit]")
    admin.wait_for_url(f"{live_server.url}/settings/labelling/")
    assert LabSettings.get().two_step_release
    slide = verified_slide(created_by=reviewer, code="E2E-REL-1")

    # user A verifies and submits, with a draft comment
    a = logged_in_page(browser, live_server, reviewer.username)
    a.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    expect(a.locator("#sign-button")).to_have_text("Submit for release")
    a.fill("#sign-reason", "three cropped cells: a test")  # below the target of 100
    a.fill("#sign-comment", DRAFT)
    a.click("#sign-button")
    a.wait_for_selector("#awaiting-release")
    expect(a.locator("#submitted-by")).to_have_text(reviewer.username)
    expect(a.locator("#release-own")).to_be_visible()
    assert a.locator("#release-button").count() == 0
    # the server refuses A's release whatever the page shows
    refused = a.evaluate("""async (url) => {
        const token = document.querySelector("#release-return-form [name=csrfmiddlewaretoken]").value;
        const r = await fetch(url, {method: "POST", headers: {"X-CSRFToken": token, "Content-Type": "application/json"},
                                    body: "{}"});
        return {status: r.status, body: await r.json()};
    }""", f"{live_server.url}/api/slides/{slide.pk}/release/")
    assert refused["status"] == 409 and "second reviewer must release it" in refused["body"]["detail"]
    a.goto(f"{live_server.url}/slides/?status=awaiting_release")
    expect(a.locator(".slide-status.status-awaiting_release")).to_have_text("Awaiting release")
    slide.refresh_from_db()
    assert slide.status == Slide.Status.AWAITING_RELEASE and slide.report is None

    # user B releases with the final comment
    b = logged_in_page(browser, live_server, reviewer2.username)
    b.goto(f"{live_server.url}/slides/{slide.pk}/verify/")
    expect(b.locator("#submitted-by")).to_have_text(reviewer.username)
    expect(b.locator("#release-comment")).to_have_value(DRAFT)
    b.fill("#release-comment", COMMENT)
    b.click("#release-button")
    b.wait_for_selector("#report")
    expect(b.locator("#report-comment-text")).to_have_text(COMMENT)  # as text: the markup is escaped
    assert b.locator("#report-comment-text b").count() == 0
    expect(b.locator("#report-submitted-by")).to_have_text(reviewer.username)
    expect(b.locator("#report-released-by")).to_have_text(reviewer2.username)
    screenshot(b, "slide-report-two-step-release")
    slide.refresh_from_db()
    assert slide.status == Slide.Status.SIGNED and slide.signed_by == reviewer2 and slide.submitted_by == reviewer
    assert AuditEvent.objects.get(action="slide.submit", target_id=str(slide.pk)).actor == reviewer
    assert AuditEvent.objects.get(action="slide.release", target_id=str(slide.pk)).actor == reviewer2

    both = f"Verified and submitted by {reviewer.username}"
    pdf = b.request.get(f"{live_server.url}/slides/{slide.pk}/report.pdf")
    assert pdf.ok and pdf.headers["content-type"] == "application/pdf"
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages).split())
    assert COMMENT in text
    assert f"by {reviewer.username} (verified and submitted)" in text and f"by {reviewer2.username}" in text

    fhir = b.request.get(f"{live_server.url}/slides/{slide.pk}/report.fhir.json").json()
    DiagnosticReport.model_validate(fhir)
    assert f"Interpretive comment: {COMMENT}" in fhir["conclusion"]
    assert both in fhir["conclusion"] and f"released by {reviewer2.username}" in fhir["conclusion"]

    hl7_text = b.request.get(f"{live_server.url}/slides/{slide.pk}/report.hl7").text()
    msg = parse_message(hl7_text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    notes = [n.nte_3.to_er7() for n in order.children if n.name == "NTE"]
    hl7_comment = COMMENT.replace("&", "\\T\\").replace("|", "\\F\\")  # HL7's escapes of the delimiters
    assert f"Interpretive comment: {hl7_comment}" in notes
    assert any(both in n and f"released by {reviewer2.username}" in n for n in notes)
    assert not a.js_errors and not b.js_errors, (a.js_errors, b.js_errors)
