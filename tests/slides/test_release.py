"""The reviewer's interpretive comment and the optional two-step release (a technologist submits, a
second reviewer releases): who may do what, what is frozen, and what every report format prints."""
import csv
import io
import json
import zipfile

import pytest
from django.core.exceptions import ValidationError
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pypdf import PdfReader

from annotations.models import AuditEvent, LabSettings
from slides import exports, release, selectors, services
from slides.platelets import services as platelets
from slides.models import Slide, SlideField
from slides.pdf import report_pdf
from tests.factories import CellImageFactory, verified_slide
from tests.helpers import rendered_texts

COMMENT = 'Reactive lymphocytes <b>seen</b> & "smudge" cells | ^~\\ review with CBC.'


def _verified_slide(user, code="REL-1"):
    """A slide of three cropped cells, every one classified (verified), ready to sign or submit."""
    return verified_slide(created_by=user, code=code)


@pytest.fixture
def two_step(db):
    LabSettings.get()
    LabSettings.objects.update(two_step_release=True)


def _hl7_notes(text: str) -> list[str]:
    msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    return [n.nte_3.to_er7() for n in order.children if n.name == "NTE"]


def _pdf_text(slide) -> str:
    pdf = report_pdf(slide, release=selectors.slide_report_release(slide=slide))
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())


# --- The comment ---------------------------------------------------------------------------------
def test_the_comment_is_frozen_into_the_signed_report_and_printed_escaped_on_every_format(client, reviewer):
    slide = services.slide_sign(slide=_verified_slide(reviewer), actor=reviewer, reason="three cells: a test",
                                comment=f"  {COMMENT}\r\n  ")
    assert slide.report["comment"] == slide.comment == COMMENT
    event = AuditEvent.objects.get(action="slide.sign", target_id=str(slide.pk))
    assert event.after["comment"] == COMMENT
    client.force_login(reviewer)
    page = client.get(f"/slides/{slide.pk}/report/").content.decode()
    assert rendered_texts(page, "id", "report-comment-text") == [" ".join(COMMENT.split())]
    assert "<b>seen</b>" not in page and "&lt;b&gt;seen&lt;/b&gt;" in page  # escaped, never markup
    fhir = client.get(f"/api/slides/{slide.pk}/export/fhir/").json()
    DiagnosticReport.model_validate(fhir)
    assert f"Interpretive comment: {COMMENT}" in fhir["conclusion"]
    notes = _hl7_notes(client.get(f"/api/slides/{slide.pk}/export/hl7/").content.decode())
    escaped = COMMENT.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("~", "\\R\\").replace(
        "&", "\\T\\")
    assert f"Interpretive comment: {escaped}" in notes
    rows = list(csv.reader(io.StringIO(client.get(f"/api/slides/{slide.pk}/export/csv/").content.decode())))
    col = rows[0].index("interpretive_comment")
    assert len(rows) > 1 and {r[col] for r in rows[1:]} == {COMMENT}
    assert COMMENT in _pdf_text(slide)


def test_an_empty_comment_is_allowed_and_prints_nothing(reviewer):
    slide = services.slide_sign(slide=_verified_slide(reviewer), actor=reviewer, reason="a test", comment="   ")
    assert slide.report["comment"] == ""
    assert not any(line.startswith("Interpretive comment") for line in
                   exports.fhir_report(slide)["conclusion"].split(". "))
    assert "Interpretive comment" not in exports.fhir_report(slide)["conclusion"]
    assert "Interpretive comment" not in "".join(_hl7_notes(exports.hl7_report(slide)))


def test_a_comment_over_the_limit_is_refused_and_nothing_is_signed(client, reviewer):
    slide = _verified_slide(reviewer)
    with pytest.raises(ValidationError, match="limited to 2000"):
        services.slide_sign(slide=slide, actor=reviewer, reason="a test", comment="x" * 2001)
    client.force_login(reviewer)
    r = client.post(f"/api/slides/{slide.pk}/sign/", {"reason": "a test", "comment": "x" * 2001},
                    content_type="application/json")
    assert r.status_code == 400 and "comment" in r.json()
    r = client.post(f"/slides/{slide.pk}/sign/", {"reason": "a test", "comment": "x" * 2001})
    assert r.status_code == 302
    slide.refresh_from_db()
    assert slide.status == Slide.Status.VERIFIED and slide.report is None
    assert services.slide_sign(slide=slide, actor=reviewer, reason="a test", comment="x" * 2000).report["comment"]


def test_a_labeller_can_neither_sign_nor_comment(client, labeller, reviewer):
    slide = _verified_slide(reviewer)
    client.force_login(labeller)
    r = client.post(f"/api/slides/{slide.pk}/sign/", {"reason": "a test", "comment": "mine"},
                    content_type="application/json")
    assert r.status_code == 403
    assert client.post(f"/slides/{slide.pk}/sign/", {"reason": "a", "comment": "mine"}).status_code == 403
    slide.refresh_from_db()
    assert slide.comment == "" and slide.status == Slide.Status.VERIFIED


def test_a_correction_carries_its_own_comment(reviewer):
    v1 = services.slide_sign(slide=_verified_slide(reviewer), actor=reviewer, reason="a test", comment="First reading.")
    v2 = services.slide_correct(slide=v1, actor=reviewer, reason="monocyte was a lymphocyte")
    assert v2.comment == ""  # not copied: the new version gets its own
    v2 = services.slide_sign(slide=v2, actor=reviewer, reason="a test", comment="Corrected: lymphocytosis.")
    v1.refresh_from_db()
    assert v1.report["comment"] == "First reading." and v2.report["comment"] == "Corrected: lymphocytosis."
    assert "Interpretive comment: Corrected: lymphocytosis." in exports.fhir_report(v2)["conclusion"]
    assert "First reading" not in exports.fhir_report(v2)["conclusion"]
    assert "Interpretive comment: First reading." in exports.fhir_report(v1)["conclusion"]


# --- Two-step release ------------------------------------------------------------------------------
def test_with_two_step_release_a_slide_cannot_be_signed_in_one_step(client, reviewer, two_step):
    slide = _verified_slide(reviewer)
    with pytest.raises(services.SlideNotReady, match="Two-step release is on"):
        services.slide_sign(slide=slide, actor=reviewer, reason="a test")
    client.force_login(reviewer)
    r = client.post(f"/api/slides/{slide.pk}/sign/", {"reason": "a test"}, content_type="application/json")
    assert r.status_code == 409 and "Two-step release is on" in r.json()["detail"]


def test_submit_is_refused_while_two_step_release_is_off(reviewer):
    with pytest.raises(services.SlideNotReady, match="Two-step release is off"):
        services.slide_submit(slide=_verified_slide(reviewer), actor=reviewer, reason="a test")


def test_two_step_release_records_both_users_and_the_submitter_cannot_release(
        client, labeller, reviewer, reviewer2, two_step):
    slide = _verified_slide(reviewer)
    client.force_login(labeller)  # verifying needs the reviewer role, so does submitting
    r = client.post(f"/api/slides/{slide.pk}/submit/", {"reason": "a test"}, content_type="application/json")
    assert r.status_code == 403
    client.force_login(reviewer)
    r = client.post(f"/api/slides/{slide.pk}/submit/", {"comment": "draft"}, content_type="application/json")
    assert r.status_code == 400 and r.json()["warnings"]  # below the target: a reason, as for signing
    r = client.post(f"/api/slides/{slide.pk}/submit/", {"reason": "three cells: a test", "comment": "Draft comment."},
                    content_type="application/json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["status"] == "awaiting_release" and body["status_display"] == "Awaiting release"
    assert body["submitted_by"] == "rev1" and body["signed_by"] is None and body["comment"] == "Draft comment."
    # not signed: no report, no export, no change
    assert client.get(f"/api/slides/{slide.pk}/export/fhir/").status_code == 409
    assert client.get(f"/slides/{slide.pk}/report.hl7").status_code == 409
    with pytest.raises(ValidationError, match="not signed"):
        exports.slide_selection_clean(slide_ids=str(slide.pk))
    cell = slide.cells.first()
    assert client.post(f"/api/slides/{slide.pk}/cells/{cell.pk}/reclassify/", {"target": "basophil"},
                       content_type="application/json").status_code == 409
    listed = client.get("/api/slides/?status=awaiting_release").json()["results"]
    assert [s["id"] for s in listed] == [slide.pk]
    page = client.get("/slides/").content.decode()
    assert rendered_texts(page, "class", "slide-status status-awaiting_release") == ["Awaiting release"]
    # the submitter cannot release it: a server rule with its reason
    r = client.post(f"/api/slides/{slide.pk}/release/", {}, content_type="application/json")
    assert r.status_code == 409 and "second reviewer must release it" in r.json()["detail"]
    verify = client.get(f"/slides/{slide.pk}/verify/").content.decode()
    assert rendered_texts(verify, "id", "release-own") and not rendered_texts(verify, "id", "release-button")
    client.force_login(labeller)
    assert client.post(f"/api/slides/{slide.pk}/release/", {}, content_type="application/json").status_code == 403
    slide.refresh_from_db()
    assert slide.status == Slide.Status.AWAITING_RELEASE
    # a second reviewer releases, with the final comment
    client.force_login(reviewer2)
    r = client.post(f"/api/slides/{slide.pk}/release/", {"comment": "Lymphocytosis; <i>repeat</i> in 2 weeks."},
                    content_type="application/json")
    assert r.status_code == 200, r.content
    slide.refresh_from_db()
    assert slide.status == Slide.Status.SIGNED and slide.signed_by.username == "rev2"
    assert slide.submitted_by.username == "rev1"
    rec = slide.report["release"]
    assert (rec["submitted_by"], rec["released_by"], rec["two_step"]) == ("rev1", "rev2", True)
    assert slide.report["comment"] == "Lymphocytosis; <i>repeat</i> in 2 weeks."
    assert slide.report["sign_reason"] == "three cells: a test"
    submit = AuditEvent.objects.get(action="slide.submit", target_id=str(slide.pk))
    released = AuditEvent.objects.get(action="slide.release", target_id=str(slide.pk))
    assert submit.actor.username == "rev1" and released.actor.username == "rev2"
    assert released.after["release"]["submitted_by"] == "rev1"
    # every format names both
    line = "Verified and submitted by rev1"
    fhir = client.get(f"/api/slides/{slide.pk}/export/fhir/").json()
    DiagnosticReport.model_validate(fhir)
    assert line in fhir["conclusion"] and "released by rev2" in fhir["conclusion"]
    notes = _hl7_notes(client.get(f"/api/slides/{slide.pk}/export/hl7/").content.decode())
    assert any(line in n and "released by rev2" in n for n in notes)
    rows = list(csv.reader(io.StringIO(client.get(f"/api/slides/{slide.pk}/export/csv/").content.decode())))
    col = {name: i for i, name in enumerate(rows[0])}
    assert {(r[col["submitted_by"]], r[col["released_by"]]) for r in rows[1:]} == {("rev1", "rev2")}
    text = _pdf_text(slide)
    assert "by rev1 (verified and submitted)" in text and "Released" in text and "by rev2" in text
    page = client.get(f"/slides/{slide.pk}/report/").content.decode()
    assert rendered_texts(page, "id", "report-submitted-by") == ["rev1"]
    assert rendered_texts(page, "id", "report-released-by") == ["rev2"]
    assert rendered_texts(page, "id", "report-comment-text") == ["Lymphocytosis; <i>repeat</i> in 2 weeks."]


def test_a_submitted_slide_is_locked_against_every_change(reviewer, two_step):
    slide = services.slide_submit(slide=_verified_slide(reviewer), actor=reviewer, reason="a test")
    with pytest.raises(services.SlideLocked, match="awaits release"):
        services.slide_update(slide=slide, actor=reviewer, notes="changed")
    with pytest.raises(services.SlideLocked, match="awaits release"):
        services.slide_cell_reclassify(cell=slide.cells.first(), actor=reviewer, target="basophil")
    field = SlideField.objects.create(slide=slide, image=CellImageFactory(uploaded_by=reviewer), platelet_count=3)
    with pytest.raises(services.SlideLocked, match="awaits release"):
        platelets.field_platelet_correct(field=field, actor=reviewer, count=5)
    with pytest.raises(services.SlideLocked, match="awaits release"):
        services.slide_submit(slide=slide, actor=reviewer, reason="again")
    field.refresh_from_db()
    assert field.platelet_count_corrected is None and slide.cells.filter(final_class__code="basophil").count() == 0


def test_the_releaser_keeps_the_submitted_comment_when_giving_none(reviewer, reviewer2, two_step):
    slide = services.slide_submit(slide=_verified_slide(reviewer), actor=reviewer, reason="a test",
                                  comment="Submitted comment.")
    slide = services.slide_release(slide=slide, actor=reviewer2)
    assert slide.report["comment"] == "Submitted comment."


def test_a_submitted_slide_can_go_back_to_verification(reviewer, reviewer2, two_step):
    slide = services.slide_submit(slide=_verified_slide(reviewer), actor=reviewer, reason="a test")
    with pytest.raises(ValidationError):
        services.slide_release_return(slide=slide, actor=reviewer2, reason="")
    slide = services.slide_release_return(slide=slide, actor=reviewer2, reason="check the monocyte")
    assert slide.status == Slide.Status.VERIFIED and slide.submitted_by is None
    assert AuditEvent.objects.get(action="slide.release_return", target_id=str(slide.pk)).after == {
        "reason": "check the monocyte"}
    with pytest.raises(services.SlideLocked, match="not awaiting release"):
        services.slide_release(slide=slide, actor=reviewer2)
    cell = slide.cells.first()
    services.slide_cell_reclassify(cell=cell, actor=reviewer2, target="lymphocyte")  # editable again


def test_a_slide_submitted_before_two_step_release_was_turned_off_is_still_released(reviewer, reviewer2, two_step):
    slide = services.slide_submit(slide=_verified_slide(reviewer), actor=reviewer, reason="a test")
    LabSettings.objects.update(two_step_release=False)
    with pytest.raises(services.SlideLocked, match="awaits release"):
        services.slide_sign(slide=slide, actor=reviewer2, reason="a test")
    assert services.slide_release(slide=slide, actor=reviewer2).is_signed


def test_an_export_without_names_gives_the_submitter_and_releaser_as_pseudonyms(reviewer, reviewer2, two_step):
    slide = services.slide_submit(slide=_verified_slide(reviewer), actor=reviewer, reason="a test")
    services.slide_release(slide=slide, actor=reviewer2, comment="ok")
    selection = exports.slide_selection_clean(slide_ids=str(slide.pk))
    export = exports.slides_export(selection=selection, actor=None, channel="cli")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(export.chunks)))
    folder = exports.slide_folder(slide)
    fhir = json.loads(archive.read(f"{folder}/report.fhir.json"))
    report_csv = archive.read(f"{folder}/report.csv").decode()
    for text in (fhir["conclusion"], report_csv):
        assert "rev1" not in text and "rev2" not in text
    assert exports.reader_pseudonym(reviewer.pk) in fhir["conclusion"]


def test_the_lab_settings_page_turns_two_step_release_on_audited(client, lab_admin):
    client.force_login(lab_admin)
    lab = LabSettings.get()
    r = client.post("/settings/labelling/", {"labels_required_train": lab.labels_required_train,
                                             "labels_required_heldout": lab.labels_required_heldout,
                                             "blind_heldout": "on", "slides_train": "on",
                                             "two_step_release": "on"})
    assert r.status_code == 302
    assert LabSettings.get().two_step_release is True
    event = AuditEvent.objects.filter(action="settings.labelling").latest("id")
    assert event.before["two_step_release"] is False and event.after["two_step_release"] is True
    r = client.post("/api/lab-settings/", {"labels_required_train": lab.labels_required_train,
                                           "labels_required_heldout": lab.labels_required_heldout,
                                           "blind_heldout": True, "two_step_release": False},
                    content_type="application/json")
    assert r.status_code == 200 and r.json()["two_step_release"] is False
    assert LabSettings.get().two_step_release is False and LabSettings.get().slides_train is True  # left as it was


def test_release_text_helpers_are_pure():
    report = {"comment": "c", "release": {"submitted_by": "a", "submitted_by_id": 1, "submitted_at":
                                          "2026-12-07T10:00:00+00:00", "released_by": "b", "released_by_id": 2,
                                          "released_at": "2026-12-07T11:30:00+00:00"}}
    assert release.report_lines(report) == [
        "Interpretive comment: c",
        "Verified and submitted by a (2026-12-07 10:00 UTC); released by b (2026-12-07 11:30 UTC)."]
    assert release.report_lines({}) == []
    named = release.report_with_names(report, name_of=lambda pk, name: f"u{pk}")
    assert (named["release"]["submitted_by"], named["release"]["released_by"]) == ("u1", "u2")
    assert report["release"]["submitted_by"] == "a"  # the original is untouched
