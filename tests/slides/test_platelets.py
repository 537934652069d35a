"""The platelet estimate in the portal: found after the white cells, stored per field, corrected by a
reviewer (audited; the report uses the correction), reported only when the lab turned it on (page,
PDF, CSV, FHIR with LOINC 49497-1, API). Real BCCD fields (bccd-dev when present, else the demo copies)."""
import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pypdf import PdfReader

from annotations.models import AuditEvent, LabSettings
from slides import services
from slides.platelets import services as platelets
from slides.models import ReferenceInterval, Slide, SlideField
from slides.selectors import slide_differential
from tests.helpers import DEMO_FIELDS, SHARED_DATA

BCCD = SHARED_DATA / "bccd-dev"


def platelet_fields(n=3) -> list[Path]:
    """Fields with annotated platelets (bccd-dev's first ones, else the demo copies of BCCD)."""
    folder = BCCD / "JPEGImages" if (BCCD / "JPEGImages").is_dir() else DEMO_FIELDS
    xml_dir = BCCD / "Annotations" if folder.parent == BCCD else DEMO_FIELDS
    out = []
    for jpg in sorted(folder.glob("*.jpg")):
        root = ET.parse(xml_dir / f"{jpg.stem}.xml").getroot()
        if any((o.findtext("name") or "").strip() == "Platelets" for o in root.findall("object")):
            out.append(jpg)
        if len(out) == n:
            break
    return out


def lab_turns_estimate_on(factor=20.0):
    lab = LabSettings.get()
    lab.platelet_estimate, lab.platelet_factor = True, factor
    lab.save()
    ReferenceInterval.objects.get_or_create(
        measure=ReferenceInterval.Measure.PLATELETS,
        defaults={"name": "Platelet estimate", "codes": "platelets", "low": 150, "high": 400,
                  "flag_low": "Possible thrombocytopenia", "flag_high": "Possible thrombocytosis"})


def processed_slide(user, code="PLT-1", n=3):
    slide = services.slide_create(code=code, created_by=user, target_count=100)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in platelet_fields(n)],
                              uploaded_by=user)
    out = services.slide_process(slide_id=slide.pk)
    assert out is not None, Slide.objects.get(pk=slide.pk).error
    return out


def classify_all(slide, actor, target="lymphocyte"):
    for cell in slide.cells.filter(detector_kind="wbc"):
        services.slide_cell_reclassify(cell=cell, actor=actor, target=target)
    for cell in slide.cells.exclude(detector_kind="wbc"):
        services.slide_cell_reclassify(cell=cell, actor=actor, target="not_counted")


def test_processing_finds_platelets_and_red_cells_in_every_field(labeller, slides_model):
    slide = processed_slide(labeller)
    fields = list(slide.fields.order_by("position"))
    assert len(fields) == 3
    assert sum(f.platelet_count for f in fields) >= 2  # each field was chosen for its annotated platelets
    for f in fields:
        assert f.red_cell_count >= 3 and len(f.red_cell_boxes) >= 3
        assert f.platelet_count == sum(b[4] for b in f.platelet_boxes)
        for x0, y0, x1, y1, *_ in f.platelet_boxes + f.red_cell_boxes:
            assert 0 <= x0 < x1 <= f.image.width and 0 <= y0 < y1 <= f.image.height
        # no platelet inside a white cell's box
        for c in f.cells.filter(detector_kind="wbc"):
            for x0, y0, x1, y1, *_ in f.platelet_boxes:
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                assert not (c.x0 <= cx < c.x1 and c.y0 <= cy < c.y1)
    assert "platelets_red_cells" in slide.progress["seconds"]
    # a second run finds nothing left to do
    assert platelets.slide_platelets_detect(slide=slide) == 0


def test_the_estimate_shows_only_when_the_lab_turns_it_on(labeller, slides_model):
    slide = processed_slide(labeller)
    assert "platelets" not in slide_differential(slide=slide)  # off by default
    lab_turns_estimate_on(factor=15.0)
    plt = slide_differential(slide=slide)["platelets"]
    fields = list(slide.fields.order_by("position"))
    assert plt["per_field"] == [f.platelet_count for f in fields]
    assert plt["red_cells"]["per_field"] == [f.red_cell_count for f in fields]
    assert plt["estimate"] == pytest.approx(15.0 * plt["mean"], abs=0.1)
    assert plt["interval"][0] <= plt["mean"] <= plt["interval"][1]
    assert plt["reference"]["low"] == 150 and plt["reference"]["status"] in ("flag", "possible", "normal")
    white = slide.cells.filter(detector_kind="wbc").count()
    assert plt["wbc_rbc_ratio"] == f"1:{sum(plt['red_cells']['per_field']) / white:.0f}"


def test_the_slide_page_shows_the_estimate_only_when_on(client, labeller, slides_model):
    slide = processed_slide(labeller, code="PLT-2")
    client.force_login(labeller)
    assert 'id="platelet-estimate"' not in client.get(f"/slides/{slide.pk}/").content.decode()
    lab_turns_estimate_on(factor=15.0)
    page = client.get(f"/slides/{slide.pk}/").content.decode()
    plt = slide_differential(slide=slide)["platelets"]
    assert 'id="platelet-estimate"' in page and f"over {plt['fields']} field(s)" in page


def test_a_reviewer_corrects_a_field_the_correction_is_audited_and_signed_into_the_report(
        labeller, reviewer, slides_model):
    lab_turns_estimate_on()
    slide = processed_slide(labeller)
    field = slide.fields.order_by("position").first()
    detected = field.platelet_count
    platelets.field_platelet_correct(field=field, actor=reviewer, count=detected + 7)
    field.refresh_from_db()
    assert field.platelet_count == detected and field.platelet_count_corrected == detected + 7
    event = AuditEvent.objects.get(action="slide.platelets_correct", target_id=str(field.pk))
    assert event.actor == reviewer and event.before["detected"] == detected and event.after["corrected"] == detected + 7
    with pytest.raises(Exception, match="whole number|between"):
        platelets.field_platelet_correct(field=field, actor=reviewer, count="-1")
    classify_all(slide, reviewer)
    signed = services.slide_sign(slide=slide, actor=reviewer, reason="three fields only")
    plt = signed.report["platelets"]
    assert plt["per_field"][0] == detected + 7 and plt["corrected_fields"] == 1
    assert "1 corrected by the reviewer" in plt["method"]
    # signed: read-only
    with pytest.raises(services.SlideLocked):
        platelets.field_platelet_correct(field=field, actor=reviewer, count=0)
    # a corrected version keeps the fields' platelets and the correction
    new = services.slide_correct(slide=signed, actor=reviewer, reason="recount")
    copy = new.fields.order_by("position").first()
    assert copy.platelet_count == detected and copy.platelet_count_corrected == detected + 7
    assert copy.red_cell_boxes == field.red_cell_boxes


def _signed(client, labeller, reviewer, code):
    slide = processed_slide(labeller, code=code, n=2)
    classify_all(slide, reviewer)
    return services.slide_sign(slide=slide, actor=reviewer, reason="two fields")


def test_signed_report_formats_carry_the_estimate_only_when_on(client, labeller, reviewer, slides_model):
    off = _signed(client, labeller, reviewer, "PLT-0FF-1")
    lab_turns_estimate_on()
    on = _signed(client, labeller, reviewer, "PLT-0N-2")
    client.force_login(labeller)
    for slide, present in ((off, False), (on, True)):
        page = client.get(f"/slides/{slide.pk}/report/").content.decode()
        assert ('id="platelet-estimate"' in page) is present
        fhir = client.get(f"/api/slides/{slide.pk}/export/fhir/").json()
        DiagnosticReport.model_validate(fhir)
        codes = {o["code"]["coding"][0]["code"]: o for o in fhir["contained"]}
        assert ("49497-1" in codes) is present
        rows = list(csv.reader(io.StringIO(client.get(f"/api/slides/{slide.pk}/export/csv/").content.decode())))
        assert any(r[2] == "platelet_estimate" for r in rows) is present
        pdf = "".join(p.extract_text() for p in PdfReader(io.BytesIO(
            client.get(f"/slides/{slide.pk}/report.pdf").content)).pages)
        assert ("Platelet estimate" in pdf) is present
    plt = on.report["platelets"]
    obs = codes["49497-1"]
    assert obs["valueQuantity"]["value"] == plt["estimate"] and obs["valueQuantity"]["code"] == "10*9/L"
    assert obs["referenceRange"][0]["low"]["value"] == 150
    assert [c["valueRange"] for c in obs["component"] if "valueRange" in c][0]["high"]["value"] == \
        plt["estimate_interval"][1]
    assert any("platelet(s) in 2 field(s)" in n["text"] for n in obs["note"])
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    msg = parse_message(client.get(f"/api/slides/{on.pk}/export/hl7/").content.decode(),
                        validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    obx = {o.OBX.obx_3.obx_3_1.to_er7(): o.OBX
           for o in msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION}
    assert float(obx["49497-1"].obx_5.to_er7()) == plt["estimate"]
    row = next(r for r in rows if r[2] == "platelet_estimate")
    assert float(row[8]) == plt["estimate"]
    # turning the estimate off later does not change a signed report
    LabSettings.objects.update(platelet_estimate=False)
    assert "49497-1" in {o["code"]["coding"][0]["code"]
                         for o in client.get(f"/api/slides/{on.pk}/export/fhir/").json()["contained"]}


def test_api_lists_fields_and_only_reviewers_correct(client, labeller, reviewer, slides_model):
    lab_turns_estimate_on()
    slide = processed_slide(labeller, n=2)
    client.force_login(labeller)
    body = client.get(f"/api/slides/{slide.pk}/platelets/").json()
    assert body["enabled"] is True and len(body["fields"]) == 2
    assert body["estimate"]["per_field"] == [f["platelets_reported"] for f in body["fields"]]
    assert "platelets" in client.get(f"/api/slides/{slide.pk}/").json()["differential"]
    field = body["fields"][0]
    url = f"/api/slides/{slide.pk}/fields/{field['id']}/platelets/"
    assert client.post(url, {"count": 3}, content_type="application/json").status_code == 403
    client.force_login(reviewer)
    r = client.post(url, {"count": 3}, content_type="application/json")
    assert r.status_code == 200 and r.json()["platelets_reported"] == 3 and r.json()["platelet_corrected_by"] == "rev1"
    assert client.post(url, {"count": -2}, content_type="application/json").status_code == 400
    r = client.post(url, {"count": None}, content_type="application/json")  # withdrawn
    assert r.json()["platelets_reported"] == field["platelet_count"]
    assert SlideField.objects.get(pk=field["id"]).platelet_corrected_by is None


def test_lab_admin_turns_the_estimate_on_with_a_factor_audited(client, lab_admin, reviewer):
    client.force_login(reviewer)
    assert client.get("/slides/platelet-settings/").status_code == 403
    client.force_login(lab_admin)
    assert client.post("/slides/platelet-settings/", {"enabled": "on", "factor": "-3"}).status_code == 400
    assert not LabSettings.get().platelet_estimate
    r = client.post("/slides/platelet-settings/", {"enabled": "on", "factor": "12.5"})
    assert r.status_code == 302
    lab = LabSettings.get()
    assert lab.platelet_estimate and lab.platelet_factor == 12.5
    assert AuditEvent.objects.filter(action="settings.platelets").count() == 1
    # the same over the API
    assert client.get("/api/slides/platelet-settings/").json() == {"platelet_estimate": True, "platelet_factor": 12.5}
    r = client.post("/api/slides/platelet-settings/", {"platelet_estimate": False, "platelet_factor": 18},
                    content_type="application/json")
    assert r.status_code == 200 and not LabSettings.get().platelet_estimate and LabSettings.get().platelet_factor == 18
    assert client.post("/api/slides/platelet-settings/", {"platelet_estimate": True, "platelet_factor": 0},
                       content_type="application/json").status_code == 400
    client.force_login(reviewer)
    assert client.get("/api/slides/platelet-settings/").status_code == 403
    client.force_login(lab_admin)
    # the platelet reference interval is one of the lab's intervals, with the code 'platelets'
    services.reference_interval_save(actor=lab_admin, name="Platelets", codes="platelets", measure="platelets",
                                     low=140, high=440, flag_low="Low platelets", flag_high="High platelets",
                                     active=True)
    with pytest.raises(Exception, match="Unknown class code"):
        services.reference_interval_save(actor=lab_admin, name="X", codes="platelets", measure="percent", low=1,
                                         high=2, active=True)
