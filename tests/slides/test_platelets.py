"""The platelet estimate in the portal: found after the white cells, stored per field, corrected by a
reviewer (audited; the report uses the correction), reported only when the lab turned it on (page,
PDF, CSV, FHIR with LOINC 49497-1, API). Real BCCD fields (bccd-dev when present, else the demo copies)."""
import csv
import importlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.utils import timezone
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pypdf import PdfReader

from annotations.models import AuditEvent, LabSettings
from classifier.ml.reasons import OUT_OF_DISTRIBUTION
from slides import services
from slides.platelets import services as platelets
from slides.models import ReferenceInterval, Slide, SlideField
from slides.selectors import slide_differential
from tests.factories import ModelVersionFactory, cell_class, SlideCellFactory, SlideFactory, SlideFieldFactory
from tests.helpers import DEMO_FIELDS, SHARED_DATA, html_element

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


def lab_calibrates(factor=20.0, *, by=None):
    """A calibration of the lab's factor stored as the calibration service would (12 slides, a
    standard error of 2 % of the factor)."""
    lab = LabSettings.get()
    lab.platelet_factor, lab.platelet_factor_se, lab.platelet_calibration_n = factor, factor * 0.02, 12
    lab.platelet_factor_low, lab.platelet_factor_high = factor * 0.956, factor * 1.044
    lab.platelet_calibrated_at, lab.platelet_calibrated_by = timezone.now(), by
    lab.save()
    return lab


def lab_turns_estimate_on(factor=20.0):
    lab = lab_calibrates(factor)
    lab.platelet_estimate = True
    lab.save()
    platelet_reference_interval()


def platelet_reference_interval():
    """The platelet reference interval the migration seeds (150-400), put back after a flush
    (``slides.seed``, hence the ``reference_intervals`` fixture, holds only the differential's)."""
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
    # three fields, a handful of white cells: below the target count, so no automatic flag (as the differential's)
    assert plt["reference"]["low"] == 150 and plt["reference"]["status"] == "insufficient"
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


# 100 cells inside every seeded reference interval: 60 % neutrophils, 30 % lymphocytes, 6 % monocytes, ...
NORMAL_DIFFERENTIAL = (["neutrophil_segmented"] * 60 + ["lymphocyte"] * 30 + ["monocyte"] * 6 + ["eosinophil"] * 3
                       + ["basophil"])


def counted_slide(*, reviewer, code, platelets_per_field=(1,) * 6, cells=100, unverified=0, foreign=False):
    """A slide of fields whose ``cells`` white cells are counted (a normal differential): all but ``unverified``
    verified by ``reviewer``. ``foreign``: its model found every cell unlike its training images."""
    version = ModelVersionFactory(metrics={"ood": {"expected_rate": 0.02, "quantile": 97.5}}) if foreign else None
    slide = SlideFactory(code=code, created_by=reviewer, model_version=version)
    fields = [SlideFieldFactory(slide=slide, platelet_count=n) for n in platelets_per_field]
    image = fields[0].image
    classes = {code: cell_class(code) for code in set(NORMAL_DIFFERENTIAL)}
    for i in range(cells):
        SlideCellFactory(slide=slide, field=fields[i % len(fields)], image=image, model_version=version,
                         final_class=classes[NORMAL_DIFFERENTIAL[i % len(NORMAL_DIFFERENTIAL)]],
                         changed_by=reviewer if i >= unverified else None,
                         ood_score=9.0 if foreign else None, reasons=[OUT_OF_DISTRIBUTION] if foreign else [])
    return slide


def report_formats(client, slide) -> dict:
    """What each format of the signed report says about the flags and the platelet estimate."""
    page = client.get(f"/slides/{slide.pk}/report/").content.decode()
    pdf = PdfReader(io.BytesIO(client.get(f"/slides/{slide.pk}/report.pdf").content))
    fhir = client.get(f"/api/slides/{slide.pk}/export/fhir/").json()
    DiagnosticReport.model_validate(fhir)
    obs = next(o for o in fhir["contained"] if o["code"]["coding"][0]["code"] == "49497-1")
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    msg = parse_message(client.get(f"/api/slides/{slide.pk}/export/hl7/").content.decode().replace("\n", "\r"),
                        validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    obx = next(o.OBX for o in order.ORU_R01_OBSERVATION if o.OBX.obx_3.obx_3_1.to_er7() == "49497-1")
    return {
        "page_summary": html_element(page, "flag-summary").text,
        "page_platelet_flag": html_element(page, "platelet-flag"),
        "pdf_first_page": pdf.pages[0].extract_text(),
        "pdf": "".join(p.extract_text() for p in pdf.pages),
        "fhir_conclusion": fhir["conclusion"],
        "fhir_interpretation": [c["code"] for i in obs.get("interpretation", []) for c in i["coding"]],
        "hl7_nte": [n.nte_3.to_er7() for n in order.children if n.name == "NTE"],
        "hl7_obx_8": obx.obx_8.to_er7(),
    }


def test_a_platelet_flag_reaches_every_format_from_the_one_flag_summary(client, reviewer, reference_intervals):
    lab_turns_estimate_on(factor=20.0)
    slide = counted_slide(reviewer=reviewer, code="PLT-LOW")  # one platelet per field x 20: wholly below 150
    diff = slide_differential(slide=slide)
    assert diff["platelets"]["reference"]["status"] == "flag"
    assert diff["flag_summary"]["flags"] == ["Possible thrombocytopenia"]
    signed = services.slide_sign(slide=slide, actor=reviewer)
    client.force_login(reviewer)
    out = report_formats(client, signed)
    assert out["page_summary"] == "Flags: Possible thrombocytopenia."
    assert out["page_platelet_flag"]["data-status"] == "flag"
    assert "Flags: Possible thrombocytopenia." in out["pdf_first_page"]
    assert "Flags: Possible thrombocytopenia." in out["fhir_conclusion"] and out["fhir_interpretation"] == ["L"]
    assert "Flags: Possible thrombocytopenia." in out["hl7_nte"] and out["hl7_obx_8"] == "L"


def test_a_foreign_slides_platelet_flag_is_withheld_in_every_format(client, reviewer, reference_intervals):
    lab_turns_estimate_on(factor=20.0)
    # the model found every cell unlike its training images and two of its calls were never verified
    slide = counted_slide(reviewer=reviewer, code="PLT-FOREIGN", unverified=2, foreign=True)
    diff = slide_differential(slide=slide)
    assert diff["domain"]["unlike"] and diff["flag_summary"]["suppressed_reason"]
    ref = diff["platelets"]["reference"]
    assert (ref["status"], ref["flag"], ref["interpretation"]) == ("suppressed", "", "IND")
    assert diff["flag_summary"]["flags"] == [] and diff["flag_summary"]["possible"] == []
    with pytest.raises(services.SignatureNeedsReason):
        services.slide_sign(slide=slide, actor=reviewer)
    signed = services.slide_sign(slide=slide, actor=reviewer, reason="foreign fields, read by eye")
    client.force_login(reviewer)
    out = report_formats(client, signed)
    assert out["page_summary"] == "No flags."
    assert out["page_platelet_flag"]["data-status"] == "suppressed"
    assert out["page_platelet_flag"].text.startswith("No automatic flag: the images are unlike")
    for text in (out["pdf"], out["fhir_conclusion"], " ".join(out["hl7_nte"])):
        assert "No flags." in text and "Possible thrombocytopenia" not in text
    assert "No flags." in out["pdf_first_page"]
    assert out["fhir_interpretation"] == ["IND"] and out["hl7_obx_8"] != "L"


def test_the_signing_checklist_lists_the_estimate_and_its_calibration(client, reviewer, lab_admin,
                                                                      reference_intervals):
    lab_turns_estimate_on(factor=20.0)
    LabSettings.objects.update(platelet_calibrated_by=lab_admin)
    slide = counted_slide(reviewer=reviewer, code="PLT-SIGN", unverified=2, foreign=True)
    client.force_login(reviewer)
    r = client.post(f"/slides/{slide.pk}/sign/")  # a warning stands: the confirmation step
    assert r.status_code == 400
    page = r.content.decode()
    estimate = html_element(page, "sign-platelet-estimate").text
    assert estimate.startswith("Platelet estimate 20 10^9/L (95% interval")
    assert "flag withheld — No automatic flag: the images are unlike" in estimate
    calibration = html_element(page, "sign-platelet-calibration").text
    lab = LabSettings.get()
    assert calibration == (f"Factor 20 (95% interval 19.120–20.880), calibrated on 12 slides on "
                           f"{lab.platelet_calibrated_at:%Y-%m-%d} by admin1")
    verify = client.get(f"/slides/{slide.pk}/verify/").content.decode()
    assert html_element(verify, "sign-platelet-estimate")["data-status"] == "suppressed"
    assert html_element(verify, "sign-form") is not None


def test_the_estimate_cannot_be_turned_on_without_a_calibrated_factor_page_and_api(client, lab_admin, reviewer):
    assert LabSettings.get().platelet_factor is None and LabSettings.get().platelet_calibration() is None
    client.force_login(reviewer)
    assert client.get("/slides/platelet-settings/").status_code == 403
    assert client.post("/api/slides/platelet-settings/", {"platelet_estimate": True},
                       content_type="application/json").status_code == 403
    client.force_login(lab_admin)
    page = client.get("/slides/platelet-settings/").content.decode()
    assert "No factor yet" in page and 'id="platelet-calibration-form"' in page
    r = client.post("/slides/platelet-settings/", {"action": "enable", "enabled": "on"})
    assert r.status_code == 400 and [str(m) for m in r.context["messages"]] == [platelets.ENABLE_REFUSED]
    r = client.post("/api/slides/platelet-settings/", {"platelet_estimate": True}, content_type="application/json")
    assert r.status_code == 400 and r.json()["platelet_estimate"] == [platelets.ENABLE_REFUSED]
    # a factor is not typed in: it comes from a calibration
    r = client.post("/api/slides/platelet-settings/", {"platelet_estimate": False, "platelet_factor": 20},
                    content_type="application/json")
    assert r.status_code == 400 and "calibration" in r.json()["platelet_factor"][0]
    assert not LabSettings.get().platelet_estimate
    assert not AuditEvent.objects.filter(action="settings.platelets").exists()


CALIBRATION = [(212, 10.1), (180, 9.2), (95, 4.4), (260, 13.5), (150, 7.2), (310, 15.8), (60, 3.1), (205, 9.9),
               (120, 6.3), (240, 11.7)]


def test_a_lab_admin_calibrates_the_factor_from_ten_slides_then_turns_the_estimate_on(client, lab_admin):
    client.force_login(lab_admin)
    text = "\n".join(f"{y}, {x}" for y, x in CALIBRATION)
    expected = sum(x * y for y, x in CALIBRATION) / sum(x * x for _, x in CALIBRATION)
    # nine slides are not enough: refused, nothing stored
    r = client.post("/slides/platelet-settings/", {"action": "calibrate", "pairs": "\n".join(text.splitlines()[:9])})
    assert r.status_code == 400 and "At least 10 slides" in r.content.decode()
    # the factor shown first, not stored
    r = client.post("/slides/platelet-settings/", {"action": "preview", "pairs": text})
    assert r.status_code == 200 and f"factor <strong>{expected:.3f}" in r.content.decode()
    assert LabSettings.get().platelet_factor is None
    r = client.post("/slides/platelet-settings/", {"action": "calibrate", "pairs": text})
    assert r.status_code == 302
    lab = LabSettings.get()
    assert lab.platelet_factor == pytest.approx(expected, abs=1e-3) and lab.platelet_calibration_n == 10
    assert lab.platelet_factor_low < lab.platelet_factor < lab.platelet_factor_high
    assert lab.platelet_calibrated_by == lab_admin and lab.platelet_calibrated_at is not None
    assert lab.platelet_calibration_pairs[0] == {"analyser_count": 212.0, "per_field": 10.1, "source": "line 1"}
    event = AuditEvent.objects.get(action="settings.platelets")
    assert event.actor == lab_admin and event.before["platelet_factor"] is None
    assert event.after["platelet_factor"] == lab.platelet_factor and event.after["platelet_calibration_n"] == 10
    page = client.get("/slides/platelet-settings/").content.decode()
    assert f"calibrated on 10 slides" in page and "by admin1" in page
    # now the estimate may be turned on (page) and off (API)
    assert client.post("/slides/platelet-settings/", {"action": "enable", "enabled": "on"}).status_code == 302
    assert LabSettings.get().platelet_estimate
    body = client.get("/api/slides/platelet-settings/").json()
    assert body["platelet_estimate"] is True and body["platelet_factor"] == lab.platelet_factor
    assert body["platelet_calibration"]["n"] == 10 and body["platelet_calibration"]["calibrated_by"] == "admin1"
    assert client.post("/api/slides/platelet-settings/", {"platelet_estimate": False},
                       content_type="application/json").json()["platelet_estimate"] is False


def test_the_calibration_api_computes_refuses_and_stores(client, lab_admin, reviewer):
    url = "/api/slides/platelet-settings/calibration/"
    pairs = [{"analyser_count": y, "per_field": x} for y, x in CALIBRATION]
    client.force_login(reviewer)
    assert client.post(url, {"pairs": pairs}, content_type="application/json").status_code == 403
    client.force_login(lab_admin)
    r = client.post(url, {"pairs": pairs, "save": False}, content_type="application/json")
    assert r.status_code == 200 and r.json()["saved"] is False and r.json()["n"] == 10
    assert LabSettings.get().platelet_factor is None
    bad = pairs[:9] + [{"analyser_count": 0, "per_field": 3}]
    r = client.post(url, {"pairs": bad}, content_type="application/json")
    assert r.status_code == 400 and "pair 10: the analyser count must be above 0" in r.json()["pairs"][0]
    r = client.post(url, {"pairs": pairs[:9] + [{"analyser_count": 100}]}, content_type="application/json")
    assert r.status_code == 400
    r = client.post(url, {"pairs": pairs}, content_type="application/json")
    assert r.status_code == 200 and r.json()["saved"] is True
    assert r.json()["calibration"]["factor"] == r.json()["factor"] == LabSettings.get().platelet_factor


def test_a_calibration_pair_reads_a_signed_slides_mean_by_its_accession(client, lab_admin, reviewer):
    signed = SlideFactory(code="CAL-1", status=Slide.Status.SIGNED)
    for count in (4, 6, 8):
        SlideFieldFactory(slide=signed, platelet_count=count)
    SlideFieldFactory(slide=signed, platelet_count=2, platelet_count_corrected=12)  # the reviewer's count is used
    unsigned = SlideFactory(code="CAL-2")
    SlideFieldFactory(slide=unsigned, platelet_count=5)
    lines = [f"{y}, {x}" for y, x in CALIBRATION[:9]]
    client.force_login(lab_admin)
    r = client.post("/slides/platelet-settings/", {"action": "calibrate", "pairs": "\n".join(lines + ["150, CAL-2"])})
    assert r.status_code == 400 and "CAL-2: no signed slide with this accession code" in r.content.decode()
    r = client.post("/slides/platelet-settings/", {"action": "calibrate", "pairs": "\n".join(lines + ["300, CAL-1"])})
    assert r.status_code == 302
    assert LabSettings.get().platelet_calibration_pairs[-1] == {"analyser_count": 300.0, "per_field": 7.5,
                                                                "source": "line 10 (CAL-1)"}


def test_the_migration_turns_off_an_estimate_left_on_with_an_uncalibrated_factor(lab_admin):
    from django.apps import apps

    migration = importlib.import_module("annotations.migrations.0010_platelet_calibration")
    LabSettings.objects.update(platelet_estimate=True, platelet_factor=20.0)
    migration.estimate_off_until_calibrated(apps, None)
    lab = LabSettings.get()
    assert not lab.platelet_estimate and lab.platelet_factor is None
    event = AuditEvent.objects.get(action="settings.platelets")
    assert event.actor is None and event.before == {"platelet_estimate": True, "platelet_factor": 20.0}


def test_platelet_rules_live_with_the_other_reference_intervals(lab_admin):
    # the platelet reference interval is one of the lab's intervals, with the code 'platelets'
    services.reference_interval_save(actor=lab_admin, name="Platelets", codes="platelets", measure="platelets",
                                     low=140, high=440, flag_low="Low platelets", flag_high="High platelets",
                                     active=True)
    with pytest.raises(Exception, match="Unknown class code"):
        services.reference_interval_save(actor=lab_admin, name="X", codes="platelets", measure="percent", low=1,
                                         high=2, active=True)
