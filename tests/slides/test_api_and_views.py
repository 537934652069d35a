"""The slide API and pages: role checks, upload -> differential -> reclassify -> sign -> export."""
import csv
import io
import json
import re

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pypdf import PdfReader

from annotations.models import CellClass
from slides import release, services
from slides.models import ReferenceInterval, Slide
from tests.helpers import field_paths, png_bytes


def _processed_slide(client, labeller):
    client.force_login(labeller)
    r = client.post("/api/slides/", {"code": "API-001", "wbc_count": "6.5", "target_count": 200}, format="json",
                    content_type="application/json")
    assert r.status_code == 201, r.content
    pk = r.json()["id"]
    files = [open(p, "rb") for p in field_paths(2)]
    try:
        r = client.post(f"/api/slides/{pk}/images/", {"files": files})
    finally:
        for f in files:
            f.close()
    assert r.status_code == 201 and len(r.json()["stored"]) == 2
    assert services.slide_process(slide_id=pk) is not None
    return pk


def test_api_flow_with_role_checks(client, labeller, reviewer, slides_model):
    pk = _processed_slide(client, labeller)
    body = client.get(f"/api/slides/{pk}/").json()
    assert body["slide"]["status"] == "ready"
    diff = body["differential"]
    assert diff["target"] == 200 and "Target of 200" in diff["target_message"]
    cells = client.get(f"/api/slides/{pk}/cells/").json()
    assert cells and all(len(c["box"]) == 4 for c in cells)
    # a labeller cannot reclassify or sign
    url = f"/api/slides/{pk}/cells/{cells[0]['id']}/reclassify/"
    assert client.post(url, {"target": "eosinophil"}).status_code == 403
    assert client.post(f"/api/slides/{pk}/sign/").status_code == 403
    # reports only once signed
    assert client.get(f"/api/slides/{pk}/export/fhir/").status_code == 409
    client.force_login(reviewer)
    r = client.post(url, {"target": "eosinophil"})
    assert r.status_code == 200 and r.json()["final_class"] == "eosinophil"
    assert client.post(url, {"target": "unidentified"}).status_code == 400
    for c in cells[1:]:
        client.post(f"/api/slides/{pk}/cells/{c['id']}/reclassify/", {"target": "lymphocyte"})
    r = client.post(f"/api/slides/{pk}/sign/")  # fewer cells than the target of 200: a reason is required
    assert r.status_code == 400 and r.json()["warnings"] == [
        f"Insufficient count: {len(cells)} of the target 200 leukocytes counted."]
    assert Slide.objects.get(pk=pk).status != Slide.Status.SIGNED
    r = client.post(f"/api/slides/{pk}/sign/", {"reason": "only two fields | demo"}, content_type="application/json")
    assert r.status_code == 200 and r.json()["status"] == "signed"
    assert r.json()["sign_reason"] == "only two fields | demo"
    assert client.post(url, {"target": "basophil"}).status_code == 409  # read-only
    client.force_login(labeller)
    fhir = client.get(f"/api/slides/{pk}/export/fhir/").json()
    DiagnosticReport.model_validate(fhir)
    assert fhir["resourceType"] == "DiagnosticReport" and fhir["status"] == "final"
    assert "26450-7" in {o["code"]["coding"][0]["code"] for o in fhir["contained"]}
    assert "26449-9" in {o["code"]["coding"][0]["code"] for o in fhir["contained"]}  # absolute, WBC known
    assert "only two fields | demo" in fhir["conclusion"] and "Insufficient count" in fhir["conclusion"]
    hl7_text = client.get(f"/api/slides/{pk}/export/hl7/").content.decode()
    msg = parse_message(hl7_text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    assert order.OBR.obr_3.ei_1.to_er7() == "API-001/v1"
    obx = {o.OBX.obx_3.obx_3_1.to_er7(): o.OBX for o in order.ORU_R01_OBSERVATION}
    assert float(obx["26450-7"].obx_5.to_er7()) == round(100 / len(cells), 2) or obx["26450-7"].obx_5.to_er7()
    assert any("only two fields \\F\\ demo" in n.nte_3.to_er7() for n in order.children if n.name == "NTE")
    rows = list(csv.reader(io.StringIO(client.get(f"/api/slides/{pk}/export/csv/").content.decode())))
    tail = len(release.CSV_COLUMNS)  # the comment and two-step release columns close each row
    assert rows[0][:3] == ["accession", "version", "class"] and rows[0][-3 - tail:-tail] == [
        "signature_warnings", "signature_reason", "domain_warning"]
    col = {name: i for i, name in enumerate(rows[0])}
    eos = next(r for r in rows if r[2] == "eosinophil")
    assert int(eos[4]) == 1 and eos[col["signature_reason"]] == "only two fields | demo"
    assert "Insufficient count" in eos[col["signature_warnings"]]
    # the tiny model has no blasts, but the reviewer verified every counted cell: 0 is the expert's count
    blast = next(r for r in rows if r[2] == "blast")
    assert (blast[col["count"]], blast[col["percent"]], blast[col["ci95_low"]]) == ("0", "0.0", "0.0")
    assert float(blast[col["ci95_high"]]) > 0
    assert blast[col["note"]] == "counted by the expert; not pre-classified by the model"
    blast_obx = obx["26446-5"]
    assert blast_obx.obx_5.to_er7() == "0" and blast_obx.obx_11.to_er7() == "F"
    assert obx["26446-5"].obx_8.to_er7() == ""  # below the target: indeterminate, which table 0078 has no code for
    data = client.get(f"/api/slides/{pk}/export/json/").json()
    assert data["counts"]["eosinophil"] == 1 and data["leukocyte_total"] == len(cells)
    client.force_login(reviewer)
    r = client.post(f"/api/slides/{pk}/correct/", {"reason": "typo"})
    assert r.status_code == 201 and r.json()["version"] == 2
    new = r.json()["id"]
    # until the correction is signed the first version stands; then it is superseded
    assert client.get(f"/api/slides/{pk}/export/fhir/").json()["status"] == "final"
    assert client.post(f"/api/slides/{new}/sign/", {"reason": "same two fields"}).status_code == 200
    old, corrected = (client.get(f"/api/slides/{p}/export/fhir/").json() for p in (pk, new))
    assert corrected["status"] == "corrected" and "typo" in corrected["conclusion"]
    assert old["status"] == "entered-in-error" and "Superseded by version 2" in old["conclusion"]
    DiagnosticReport.model_validate(old)
    old_hl7 = parse_message(client.get(f"/api/slides/{pk}/export/hl7/").content.decode(), find_groups=True)
    assert {o.OBX.obx_11.to_er7() for o in old_hl7.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION} <= {"W"}
    page = client.get(f"/slides/{pk}/report/").content.decode()
    assert 'id="superseded-banner"' in page and f'href="/slides/{new}/report/"' in page
    pdf = "".join(p.extract_text() for p in PdfReader(io.BytesIO(client.get(f"/slides/{pk}/report.pdf").content)).pages)
    assert "SUPERSEDED by version 2" in pdf


def test_api_create_refuses_a_name_with_the_reason(client, labeller):
    client.force_login(labeller)
    r = client.post("/api/slides/", {"code": "Maria Garcia"}, content_type="application/json")
    assert r.status_code == 400 and "name" in json.dumps(r.json())
    r = client.post("/api/slides/", {"code": "S-1", "target_count": 150}, content_type="application/json")
    assert r.status_code == 400


def test_pages_list_create_detail_verify_sign_report(client, labeller, reviewer, slides_model):
    client.force_login(labeller)
    r = client.post("/slides/", {"code": "12/03/1990", "kind": "fields", "target_count": 100})
    assert r.status_code == 400 and b"date" in r.content
    r = client.post("/slides/", {"code": "PG-9", "kind": "fields", "target_count": 100})
    slide = Slide.objects.get(code="PG-9")
    assert r.status_code == 302 and r["Location"] == f"/slides/{slide.pk}/"
    with open(field_paths(1)[0], "rb") as f:
        r = client.post(f"/slides/{slide.pk}/upload/", {"files": [f]})
    assert r.status_code == 302
    page = client.get(f"/slides/{slide.pk}/").content.decode()
    assert 'http-equiv="refresh"' in page  # processing: the page refreshes itself
    services.slide_process(slide_id=slide.pk)
    page = client.get(f"/slides/{slide.pk}/").content.decode()
    assert "differential-table" in page and "cell-box" in page
    assert client.get(f"/slides/{slide.pk}/verify/").status_code == 403  # labeller
    assert client.get(f"/slides/{slide.pk}/report/").status_code == 409
    client.force_login(reviewer)
    page = client.get(f"/slides/{slide.pk}/verify/").content.decode()
    assert "class-group" in page and "slides_verify.js" in page and "<script>" not in page
    cell = slide.cells.first()
    r = client.post(f"/slides/{slide.pk}/cells/{cell.pk}/reclassify/", {"target": "monocyte"},
                    HTTP_ACCEPT="application/json")
    body = r.json()
    assert r.status_code == 200 and body["cell"]["class"] == "monocyte" and "differential-table" in body["html"]
    for c in slide.cells.exclude(pk=cell.pk):  # without JS: plain form posts
        r = client.post(f"/slides/{slide.pk}/cells/{c.pk}/reclassify/", {"target": "not_counted"})
        assert r.status_code == 302
    page = client.get(f"/slides/{slide.pk}/verify/").content.decode()
    assert 'id="sign-reason"' in page and "Insufficient count: 1 of the target 100" in page
    r = client.post(f"/slides/{slide.pk}/sign/")  # without a reason: the confirmation step, nothing signed
    assert r.status_code == 400 and b"Signing needs a reason" in r.content and b'name="reason"' in r.content
    assert Slide.objects.get(pk=slide.pk).status != Slide.Status.SIGNED
    r = client.post(f"/slides/{slide.pk}/sign/", {"reason": "one cell: <b>test</b> slide"})
    assert r.status_code == 302 and r["Location"] == f"/slides/{slide.pk}/report/"
    report = client.get(f"/slides/{slide.pk}/report/").content.decode()
    assert "Leukocyte differential" in report and "Monocyte" in report
    assert "one cell: &lt;b&gt;test&lt;/b&gt; slide" in report and "insufficient count (1 of 100)" in report.lower()
    fhir = json.loads(client.get(f"/slides/{slide.pk}/report.fhir.json").content)
    mono = next(o for o in fhir["contained"] if o["code"]["coding"][0]["code"] == "26485-3")
    assert mono["valueQuantity"]["value"] == 100.0
    assert client.get(f"/slides/{slide.pk}/report.csv")["Content-Type"].startswith("text/csv")
    pdf = client.get(f"/slides/{slide.pk}/report.pdf")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Leukocyte differential — PG-9 v1" in text and "Monocyte" in text and "100.0" in text
    assert f"by {reviewer.get_username()}" in text and "Leukocytes counted" in text
    assert "verified and signed by an expert" in text
    assert "one cell: <b>test</b> slide" in text and "Insufficient count (1 of 100)" in text
    assert "located in 1 field(s)" in text
    hl7 = client.get(f"/slides/{slide.pk}/report.hl7")
    assert hl7.status_code == 200 and hl7.content.startswith(b"MSH|^~\\&|LEUKOPORTAL")


def test_pdf_report_only_for_signed_slides_and_roles_and_escapes_user_text(client, labeller, reviewer, slides_model):
    pk = _processed_slide(client, labeller)
    assert client.get(f"/slides/{pk}/report.pdf").status_code == 409  # not signed
    slide = Slide.objects.get(pk=pk)
    client.force_login(reviewer)
    for c in slide.cells.all():
        assert client.post(f"/slides/{pk}/cells/{c.pk}/reclassify/", {"target": "lymphocyte"}).status_code == 302
    assert client.post(f"/slides/{pk}/sign/", {"reason": "demo"}).status_code == 302
    Slide.objects.filter(pk=pk).update(notes='<font color="red">x</font> & <b>bold')  # markup in user text
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(client.get(f"/slides/{pk}/report.pdf").content)).pages)
    assert '<font color="red">x</font> & <b>bold' in text and "Lymphocyte" in text
    # no erythroblast among the verified cells: reported as 0 per 100 WBC, not left out
    name = CellClass.objects.get(code="erythroblast").name
    assert re.search(rf"{re.escape(name)}\s*0\s*0\.0 per 100 WBC", text), text
    page = client.get(f"/slides/{pk}/").content.decode()
    assert re.search(r'data-count-for="erythroblast">0<', page)
    assert re.search(r'data-per100-for="erythroblast">0\.0 per 100 WBC', page)
    client.logout()
    assert client.get(f"/slides/{pk}/report.pdf").status_code in (302, 403)


def test_reference_intervals_are_seeded_and_editable_by_lab_admins(client, lab_admin, reviewer):
    assert ReferenceInterval.objects.filter(flag_high="Left shift").exists()
    client.force_login(reviewer)
    assert client.get("/slides/reference-intervals/").status_code == 403
    client.force_login(lab_admin)
    ri = ReferenceInterval.objects.get(name="Eosinophils", measure="percent")
    r = client.post("/slides/reference-intervals/", {"id": ri.pk, "name": "Eosinophils", "codes": "eosinophil",
                                                     "measure": "percent", "high": "7", "flag_high": "Eosinophilia",
                                                     "active": "on", "display_order": 40})
    assert r.status_code == 302
    ri.refresh_from_db()
    assert ri.high == 7.0
    r = client.post("/slides/reference-intervals/", {"name": "X", "codes": "dragon", "measure": "percent",
                                                     "display_order": 1})
    assert r.status_code == 400 and b"Unknown class" in r.content
    r = client.post("/slides/reference-intervals/", {"name": "Blasts", "codes": "blast", "measure": "percent",
                                                     "high": "0", "flag_high": "Blasts present", "active": "on",
                                                     "display_order": 75})
    assert r.status_code == 302  # blast is in the taxonomy now


def _slide_with_fields(user, n_fields, cells_per_field=3):
    from annotations.models import Source
    from annotations.services import image_upload
    from slides.models import SlideCell, SlideField

    slide = services.slide_create(code=f"Q-{n_fields}", created_by=user)
    for i in range(n_fields):
        field = SlideField.objects.create(
            slide=slide, position=i, detected=True, n_cells=cells_per_field,
            image=image_upload(data=png_bytes(color=(200, 100 + i, 150), size=(640, 480)), uploaded_by=user,
                               source=Source.FIELD, enqueue_classification=False).image)
        for j in range(cells_per_field):
            image = image_upload(data=png_bytes(color=(10 + i, 20 + j, 30)), uploaded_by=user,
                                 source=Source.SLIDE_CELL, enqueue_classification=False).image
            SlideCell.objects.create(slide=slide, field=field, image=image, x0=10 * j, y0=10, x1=10 * j + 8, y1=18)
    Slide.objects.filter(pk=slide.pk).update(task_state=Slide.TaskState.DONE, status=Slide.Status.READY)
    return slide


def test_the_slide_page_does_not_query_per_field(client, labeller):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(labeller)
    counts = {}
    for n in (1, 4):
        slide = _slide_with_fields(labeller, n)
        with CaptureQueriesContext(connection) as ctx:
            page = client.get(f"/slides/{slide.pk}/")
        assert page.status_code == 200 and page.content.decode().count('class="cell-box') == 3 * n
        counts[n] = len(ctx.captured_queries)
    assert counts[4] == counts[1], counts


def test_a_cropped_cell_slide_reports_its_cells_not_zero_fields(client, labeller, reviewer, slides_model, demo_cells):
    slide = services.slide_create(code="CROP-1", created_by=labeller, kind=Slide.Kind.CELLS)
    files = [(p.name, p.read_bytes()) for p in sorted((demo_cells / "monocyte").iterdir())[:3]]
    services.slide_images_add(slide=slide, files=files, uploaded_by=labeller)
    services.slide_process(slide_id=slide.pk)
    client.force_login(reviewer)
    for c in slide.cells.all():
        client.post(f"/slides/{slide.pk}/cells/{c.pk}/reclassify/", {"target": "monocyte"})
    assert client.post(f"/slides/{slide.pk}/sign/", {"reason": "three cells"}).status_code == 302
    page = client.get(f"/slides/{slide.pk}/report/").content.decode()
    assert "3 cropped cell image(s) uploaded" in page and "0 field(s)" not in page
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(client.get(f"/slides/{slide.pk}/report.pdf").content)).pages)
    assert "3 cropped cell image(s) uploaded" in text and "field(s)" not in text


def test_exports_refuse_unsigned_slides_for_every_format(client, labeller, reviewer):
    slide = services.slide_create(code="UNS-1", created_by=labeller)
    client.force_login(labeller)
    for url in (f"/slides/{slide.pk}/report.hl7", f"/api/slides/{slide.pk}/export/hl7/",
                f"/slides/{slide.pk}/report.fhir.json", f"/slides/{slide.pk}/report.pdf"):
        assert client.get(url).status_code == 409, url
    client.logout()
    assert client.get(f"/api/slides/{slide.pk}/export/hl7/").status_code in (401, 403)
