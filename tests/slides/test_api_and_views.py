"""The slide API and pages: role checks, upload -> differential -> reclassify -> sign -> export."""
import csv
import io
import json

from pypdf import PdfReader


from slides import services
from slides.models import ReferenceInterval, Slide

from .conftest import field_paths


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


def test_api_flow_with_role_checks(client, labeller, reviewer, active_model):
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
    r = client.post(f"/api/slides/{pk}/sign/")
    assert r.status_code == 200 and r.json()["status"] == "signed"
    assert client.post(url, {"target": "basophil"}).status_code == 409  # read-only
    client.force_login(labeller)
    fhir = client.get(f"/api/slides/{pk}/export/fhir/").json()
    assert fhir["resourceType"] == "DiagnosticReport"
    assert "713-8" in {o["code"]["coding"][0]["code"] for o in fhir["contained"]}
    assert "711-2" in {o["code"]["coding"][0]["code"] for o in fhir["contained"]}  # absolute, WBC known
    rows = list(csv.reader(io.StringIO(client.get(f"/api/slides/{pk}/export/csv/").content.decode())))
    assert rows[0][:3] == ["accession", "version", "class"]
    eos = next(r for r in rows if r[2] == "eosinophil")
    assert int(eos[4]) == 1
    data = client.get(f"/api/slides/{pk}/export/json/").json()
    assert data["counts"]["eosinophil"] == 1 and data["leukocyte_total"] == len(cells)
    client.force_login(reviewer)
    r = client.post(f"/api/slides/{pk}/correct/", {"reason": "typo"})
    assert r.status_code == 201 and r.json()["version"] == 2


def test_api_create_refuses_a_name_with_the_reason(client, labeller):
    client.force_login(labeller)
    r = client.post("/api/slides/", {"code": "Maria Garcia"}, content_type="application/json")
    assert r.status_code == 400 and "name" in json.dumps(r.json())
    r = client.post("/api/slides/", {"code": "S-1", "target_count": 150}, content_type="application/json")
    assert r.status_code == 400


def test_pages_list_create_detail_verify_sign_report(client, labeller, reviewer, active_model):
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
    r = client.post(f"/slides/{slide.pk}/sign/")
    assert r.status_code == 302 and r["Location"] == f"/slides/{slide.pk}/report/"
    report = client.get(f"/slides/{slide.pk}/report/").content.decode()
    assert "Leukocyte differential" in report and "Monocyte" in report
    fhir = json.loads(client.get(f"/slides/{slide.pk}/report.fhir.json").content)
    mono = next(o for o in fhir["contained"] if o["code"]["coding"][0]["code"] == "5905-5")
    assert mono["valueQuantity"]["value"] == 100.0
    assert client.get(f"/slides/{slide.pk}/report.csv")["Content-Type"].startswith("text/csv")
    pdf = client.get(f"/slides/{slide.pk}/report.pdf")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Leukocyte differential — PG-9 v1" in text and "Monocyte" in text and "100.0" in text
    assert f"by {reviewer.get_username()}" in text and "Leukocytes counted" in text
    assert "verified and signed by an expert" in text


def test_pdf_report_only_for_signed_slides_and_roles_and_escapes_user_text(client, labeller, reviewer, active_model):
    pk = _processed_slide(client, labeller)
    assert client.get(f"/slides/{pk}/report.pdf").status_code == 409  # not signed
    slide = Slide.objects.get(pk=pk)
    client.force_login(reviewer)
    for c in slide.cells.all():
        assert client.post(f"/slides/{pk}/cells/{c.pk}/reclassify/", {"target": "lymphocyte"}).status_code == 302
    assert client.post(f"/slides/{pk}/sign/").status_code == 302
    Slide.objects.filter(pk=pk).update(notes='<font color="red">x</font> & <b>bold')  # markup in user text
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(client.get(f"/slides/{pk}/report.pdf").content)).pages)
    assert '<font color="red">x</font> & <b>bold' in text and "Lymphocyte" in text
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
