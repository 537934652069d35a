"""The export of signed slides: field images, a COCO file pycocotools reads (one annotation per counted
cell), the signed report's CSV and FHIR; codes and names only when ticked; lab admins only."""
import csv
import io
import json
import zipfile

import pytest
from django.core.exceptions import ValidationError
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from annotations.models import AuditEvent
from slides import exports, services
from slides.models import Slide, SlideCell
from tests.helpers import field_paths


@pytest.fixture
def signed_slide(labeller, reviewer, slides_model):
    slide = services.slide_create(code="EXP-0042", created_by=labeller, target_count=100)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(2)],
                              uploaded_by=labeller)
    services.slide_process(slide_id=slide.pk)
    cells = list(slide.cells.order_by("id"))
    assert len(cells) >= 2
    services.slide_cell_reclassify(cell=cells[0], actor=reviewer, target="not_counted")
    for c in cells[1:]:
        services.slide_cell_reclassify(cell=c, actor=reviewer, target="eosinophil" if c == cells[1] else "lymphocyte")
    return services.slide_sign(slide=Slide.objects.get(pk=slide.pk), actor=reviewer, reason="two demo fields")


def export_zip(**selection) -> zipfile.ZipFile:
    export = exports.slides_export(selection=exports.slide_selection_clean(**selection), actor=None, channel="cli")
    assert export.size is None  # made slide by slide: no length in advance
    return zipfile.ZipFile(io.BytesIO(b"".join(export.chunks)))


def test_a_signed_slide_exports_its_fields_a_coco_file_and_its_signed_report(signed_slide, tmp_path):
    from pycocotools.coco import COCO

    slide = signed_slide
    zf = export_zip()
    folder = f"slide-{slide.pk}-v1"
    for f in slide.fields.select_related("image"):
        with f.image.file.open("rb") as fh:
            assert zf.read(f"{folder}/images/{f.image.sha256}.png") == fh.read()
    zf.extractall(tmp_path)
    coco = COCO(str(tmp_path / folder / "annotations.coco.json"))
    counted = list(slide.cells.filter(status=SlideCell.Status.COUNTED).select_related("final_class", "field__image"))
    assert len(coco.getAnnIds()) == len(counted) and len(coco.getImgIds()) == slide.fields.count()
    by_sha = {c.image.sha256: c for c in counted}
    eosinophil = coco.getCatIds(catNms=["eosinophil"])
    assert len(coco.getAnnIds(catIds=eosinophil)) == 1
    for ann in coco.loadAnns(coco.getAnnIds()):
        cell = by_sha[ann["attributes"]["cell_sha256"]]
        assert coco.loadCats(ann["category_id"])[0]["name"] == cell.final_class.code
        assert ann["bbox"] == [cell.x0, cell.y0, cell.x1 - cell.x0, cell.y1 - cell.y0]
        image = coco.loadImgs(ann["image_id"])[0]
        assert image["file_name"] == f"{cell.field.image.sha256}.png" and image["width"] == cell.field.image.width
        assert ann["attributes"]["model_top_class"] == cell.top_class and \
            ann["attributes"]["model_confidence"] == cell.confidence
        assert ann["attributes"]["verified_by"].startswith("reader-")
    report = json.loads(zf.read(f"{folder}/report.fhir.json"))
    DiagnosticReport.model_validate(report)
    assert report["status"] == "final" and "two demo fields" in report["conclusion"]
    rows = list(csv.reader(io.StringIO(zf.read(f"{folder}/report.csv").decode())))
    assert rows[0][0] == "accession" and {r[0] for r in rows[1:]} == {folder}
    eos = next(r for r in rows if r[2] == "eosinophil")
    assert int(eos[4]) == 1
    index = list(csv.DictReader(io.StringIO(zf.read("slides.csv").decode())))
    assert [(r["folder"], r["release_status"], r["counted_cells"]) for r in index] == [
        (folder, "final", str(len(counted)))]
    everything = b"".join(zf.read(n) for n in zf.namelist() if not n.endswith(".png"))
    assert b"EXP-0042" not in everything and b"rev1" not in everything and b"lab1" not in everything


def test_codes_and_names_leave_only_when_ticked(signed_slide):
    zf = export_zip(include_accessions=True, include_names=True)
    folder = f"slide-{signed_slide.pk}-v1"
    report = json.loads(zf.read(f"{folder}/report.fhir.json"))
    assert report["identifier"][0]["value"] == "EXP-0042/v1" and report["performer"] == [{"display": "rev1"}]
    coco = json.loads(zf.read(f"{folder}/annotations.coco.json"))
    assert coco["info"]["accession"] == "EXP-0042" and coco["info"]["signed_by"] == "rev1"
    assert {a["attributes"]["verified_by"] for a in coco["annotations"]} == {"rev1"}


def test_a_superseded_version_is_left_out_unless_asked_and_unsigned_slides_are_refused(signed_slide, reviewer,
                                                                                        labeller):
    new = services.slide_correct(slide=signed_slide, actor=reviewer, reason="typo")
    sel = exports.slide_selection_clean()
    assert list(exports.slides_for_export(selection=sel)) == [signed_slide]  # the correction is not signed yet
    with pytest.raises(ValidationError, match="Only signed slides"):
        exports.slide_selection_clean(slide_ids=str(new.pk))
    services.slide_sign(slide=new, actor=reviewer, reason="same fields")
    assert list(exports.slides_for_export(selection=sel)) == [Slide.objects.get(pk=new.pk)]
    both = exports.slides_for_export(selection=exports.slide_selection_clean(include_superseded=True))
    assert set(both) == {signed_slide, new}
    zf = export_zip(include_superseded=True)
    statuses = {r["folder"]: r["release_status"] for r in csv.DictReader(io.StringIO(zf.read("slides.csv").decode()))}
    assert statuses == {f"slide-{signed_slide.pk}-v1": "superseded", f"slide-{new.pk}-v2": "corrected"}
    assert json.loads(zf.read(f"slide-{signed_slide.pk}-v1/report.fhir.json"))["status"] == "entered-in-error"


def test_the_page_and_the_api_stream_it_to_lab_admins_and_it_is_audited(client, signed_slide, lab_admin, reviewer):
    client.force_login(reviewer)
    assert client.get("/slides/export/").status_code == 403
    assert client.get("/api/exports/slides/").status_code == 403
    client.force_login(lab_admin)
    page = client.get("/slides/export/", {"count": "1"})
    assert page.status_code == 200 and b"<strong>1</strong> signed slide match" in page.content
    r = client.post("/slides/export/", {"progress_token": "slides-token-1"})
    assert r.status_code == 200 and r["Content-Type"] == "application/zip" and r.streaming
    names = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content))).namelist()
    assert f"slide-{signed_slide.pk}-v1/annotations.coco.json" in names
    assert client.get("/export/progress/", {"token": "slides-token-1"}).json() == {
        "done": 1, "total": 1, "unit": "slides", "finished": True}
    r = client.get("/api/exports/slides/", {"slide_ids": str(signed_slide.pk), "include_accessions": "true"})
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content)))
    assert b"EXP-0042" in zf.read("slides.csv")
    assert client.get("/api/exports/slides/", {"slide_ids": "abc"}).status_code == 400
    events = AuditEvent.objects.filter(action="slides.export")
    assert events.count() == 2 and {e.after["channel"] for e in events} == {"browser", "api"}
    assert all(e.after["slide_ids"] == [signed_slide.pk] for e in events)
