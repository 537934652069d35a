"""Red-cell morphology (slides.morphology): the ICSH 2015 catalogue and its validation, the grading
service (roles, audit, a signed slide refused, all or nothing), the grades frozen at signing and
their lines on the report page, the PDF, the CSV, FHIR (validated) and HL7 (parsed back)."""
import csv
import io
from datetime import datetime, timezone

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from annotations.models import AuditEvent
from slides import exports, fhir, hl7, services
from slides.models import RedCellGrade, Slide
from slides.morphology import catalogue, report
from slides.morphology import services as morphology
from slides.morphology.selectors import slide_red_cells_section
from tests.helpers import field_paths

SIGNED_AT = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)


# --- catalogue (pure) ---------------------------------------------------------------------------
def test_the_catalogue_has_every_finding_of_the_brief_with_the_scale_icsh_gives_it():
    codes = {f.code for f in catalogue.FINDINGS}
    assert {"anisocytosis", "microcytes", "macrocytes", "hypochromia", "polychromasia", "target_cells",
            "schistocytes", "spherocytes", "elliptocytes", "tear_drop_cells", "sickle_cells"} <= codes
    assert any(f.group == "inclusions" for f in catalogue.FINDINGS)
    assert catalogue.BY_CODE["target_cells"].grades == ("0", "1+", "2+", "3+")
    assert catalogue.BY_CODE["sickle_cells"].grades == ("0", "present")
    assert catalogue.BY_CODE["schistocytes"].scale == catalogue.PERCENT
    assert catalogue.BY_CODE["target_cells"].definition == "1+ 11-20 %, 2+ 21-50 %, 3+ >50 % of red cells"
    # LOINC only where certain; the rest local
    assert catalogue.BY_CODE["target_cells"].coding[:2] == (catalogue.LOINC, "10381-2")
    assert catalogue.BY_CODE["polychromasia"].coding[:2] == (catalogue.LOINC, "10378-8")
    assert catalogue.BY_CODE["schistocytes"].coding[:2] == (catalogue.LOCAL_SYSTEM, "schistocytes")


@pytest.mark.parametrize("percent, grade", [(0, "0"), (0.5, "1+"), (0.99, "1+"), (1, "2+"), (2, "2+"),
                                            (2.1, "3+"), (40, "3+")])
def test_schistocytes_are_graded_by_their_percentage_per_icsh(percent, grade):
    assert catalogue.schistocyte_grade(percent) == grade
    assert catalogue.validate("schistocytes", percent=str(percent)) == (grade, percent)


@pytest.mark.parametrize("code, kwargs, message", [
    ("target_cells", {"grade": "4+"}, "not a grade of this finding"),
    ("sickle_cells", {"grade": "2+"}, "allowed: 0, present"),
    ("target_cells", {"grade": "2+", "percent": "30"}, "not given as a percentage"),
    ("schistocytes", {"grade": "1+"}, "graded by their percentage"),
    ("schistocytes", {"percent": "1.5", "grade": "1+"}, r"graded 2\+, not 1\+"),
    ("schistocytes", {"percent": "101"}, "between 0 and 100"),
    ("schistocytes", {"percent": "-1"}, "between 0 and 100"),
    ("schistocytes", {"percent": "nan"}, "between 0 and 100"),
    ("schistocytes", {"percent": "a few"}, "must be a number"),
    ("burr_cells", {"grade": "1+"}, "Unknown red-cell finding"),
])
def test_a_grade_the_finding_does_not_allow_is_refused_with_a_reason(code, kwargs, message):
    with pytest.raises(catalogue.GradeError, match=message):
        catalogue.validate(code, **kwargs)


def test_a_blank_grade_leaves_the_finding_ungraded_and_zero_is_a_result():
    assert catalogue.validate("target_cells", grade="") is None
    assert catalogue.validate("schistocytes", percent="") is None
    assert catalogue.validate("target_cells", grade="0") == ("0", None)


# --- report lines (pure) ------------------------------------------------------------------------
GRADES = [{"code": "target_cells", "grade": "2+", "percent": None, "graded_by": "rev", "graded_at": "t"},
          {"code": "schistocytes", "grade": "1+", "percent": 0.5, "graded_by": "rev", "graded_at": "t"}]


def test_report_lines_show_only_the_graded_findings_in_catalogue_order():
    section = report.frozen_section(GRADES)
    assert [f["code"] for f in section["findings"]] == ["target_cells", "schistocytes"]
    lines = report.text_lines({"red_cell_morphology": section})
    assert lines[:2] == ["Target cells: 2+ (moderate).", "Schistocytes: 1+ (few; 0.5 % of red cells)."]
    assert "ICSH 2015" in lines[-1]
    rows = report.csv_rows({"red_cell_morphology": section}, accession="A-1", version=1, tail=["final"])
    assert [(r[2], r[5], r[10]) for r in rows] == [
        ("rbc_target_cells", "", "graded 2+ (moderate)"),
        ("rbc_schistocytes", "", "graded 1+ (few; 0.5 % of red cells)")]  # the percent column is of leukocytes


def test_nothing_graded_is_said_explicitly_and_an_old_report_says_nothing():
    empty = {"red_cell_morphology": report.frozen_section([])}
    assert report.text_lines(empty) == ["No red-cell findings graded."]
    assert report.csv_rows(empty, accession="A", version=1, tail=[])[0][10] == "No red-cell findings graded."
    assert report.text_lines({}) == [] and report.csv_rows({}, accession="A", version=1, tail=[]) == []


def _minimal_report(section) -> dict:
    return {"rows": [], "percentages": {}, "counts": {}, "intervals": {}, "flags": [], "leukocyte_total": 0,
            "target": 100, "red_cell_morphology": section}


def test_fhir_and_hl7_carry_each_grade_coded_and_nothing_graded_as_text():
    section = report.frozen_section(GRADES)
    doc = fhir.diagnostic_report(report=_minimal_report(section), accession="A-1", version=1,
                                 issued=SIGNED_AT.isoformat(), performer="rev", names={})
    DiagnosticReport.model_validate(doc)
    by_code = {o["code"]["coding"][0]["code"]: o for o in doc["contained"]}
    assert by_code["10381-2"]["valueCodeableConcept"]["coding"][0] == {
        "system": catalogue.GRADE_SYSTEM, "code": "2+", "display": "2+ (moderate)"}
    schisto = by_code["schistocytes"]
    assert schisto["code"]["coding"][0]["system"] == catalogue.LOCAL_SYSTEM
    assert schisto["valueCodeableConcept"]["coding"][0]["code"] == "1+"
    assert schisto["component"][0]["valueQuantity"]["value"] == 0.5
    assert {r["reference"] for r in doc["result"]} == {f"#{o['id']}" for o in doc["contained"]}

    text = hl7.oru_r01(report=_minimal_report(section), accession="A-1", version=1, signed_at=SIGNED_AT, signer="rev",
                       names={}, control_id="1", created_at=SIGNED_AT)
    msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    observations = list(msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION)
    obx = {o.OBX.obx_3.obx_3_1.to_er7(): o for o in observations}
    assert obx["10381-2"].OBX.obx_2.to_er7() == "CWE" and obx["10381-2"].OBX.obx_3.obx_3_3.to_er7() == "LN"
    assert obx["10381-2"].OBX.obx_5.to_er7().split("^")[0] == "2+"
    assert obx["schistocytes"].OBX.obx_3.obx_3_3.to_er7() == "L"
    assert obx["schistocytes"].OBX.obx_5.to_er7().split("^")[0] == "1+"
    assert "0.5 % of red cells" in obx["schistocytes"].NTE[0].nte_3.to_er7()
    assert [o.OBX.obx_1.to_er7() for o in observations] == [str(i) for i in range(1, len(observations) + 1)]

    none = _minimal_report(report.frozen_section([]))
    doc = fhir.diagnostic_report(report=none, accession="A-1", version=1, issued=SIGNED_AT.isoformat(),
                                 performer="rev", names={})
    DiagnosticReport.model_validate(doc)
    assert [o.get("valueString") for o in doc["contained"]] == ["No red-cell findings graded."]
    msg = parse_message(hl7.oru_r01(report=none, accession="A-1", version=1, signed_at=SIGNED_AT, signer="rev",
                                    names={}, control_id="1", created_at=SIGNED_AT),
                        validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    only = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION.OBX
    assert (only.obx_2.to_er7(), only.obx_5.to_er7()) == ("ST", "No red-cell findings graded.")


# --- services -----------------------------------------------------------------------------------
@pytest.fixture
def open_slide(labeller):
    return Slide.objects.create(code="RBC-1", created_by=labeller, status=Slide.Status.READY,
                                task_state=Slide.TaskState.DONE)


def test_a_reviewer_grades_the_slide_and_one_audit_event_keeps_before_and_after(open_slide, reviewer):
    morphology.slide_red_cells_grade(slide=open_slide, actor=reviewer, grades={"target_cells": "2+", "sickle_cells": ""},
                                     percents={"schistocytes": "0.5"})
    grades = {g.finding: (g.grade, g.percent, g.graded_by) for g in RedCellGrade.objects.filter(slide=open_slide)}
    assert grades == {"target_cells": ("2+", None, reviewer), "schistocytes": ("1+", 0.5, reviewer)}
    event = AuditEvent.objects.get(action="slide.red_cells_grade", target_id=str(open_slide.pk))
    assert event.before == {} and event.after == {"target_cells": ["2+", None], "schistocytes": ["1+", 0.5]}
    # a blank grade withdraws; the same grades again write nothing
    morphology.slide_red_cells_grade(slide=open_slide, actor=reviewer, grades={"target_cells": ""})
    assert list(RedCellGrade.objects.filter(slide=open_slide).values_list("finding", flat=True)) == ["schistocytes"]
    morphology.slide_red_cells_grade(slide=open_slide, actor=reviewer, grades={}, percents={"schistocytes": "0.5"})
    assert AuditEvent.objects.filter(action="slide.red_cells_grade").count() == 2


def test_a_labeller_may_not_grade(open_slide, labeller):
    with pytest.raises(PermissionDenied):
        morphology.slide_red_cells_grade(slide=open_slide, actor=labeller, grades={"target_cells": "1+"})
    assert not RedCellGrade.objects.exists() and not AuditEvent.objects.filter(action="slide.red_cells_grade").exists()


def test_one_invalid_grade_refuses_the_whole_form(open_slide, reviewer):
    with pytest.raises(ValidationError) as exc:
        morphology.slide_red_cells_grade(slide=open_slide, actor=reviewer, grades={"target_cells": "2+", "sickle_cells": "3+"})
    assert "sickle_cells" in exc.value.message_dict
    assert not RedCellGrade.objects.exists()


def test_a_signed_slide_is_refused(open_slide, reviewer):
    Slide.objects.filter(pk=open_slide.pk).update(status=Slide.Status.SIGNED)
    with pytest.raises(morphology.SlideLocked, match="signed and read-only"):
        morphology.slide_red_cells_grade(slide=open_slide, actor=reviewer, grades={"target_cells": "1+"})
    assert not RedCellGrade.objects.exists()


def test_the_verification_form_posts_grades_and_refuses_labellers(client, open_slide, reviewer, labeller):
    url = f"/slides/{open_slide.pk}/red-cells/"
    client.force_login(labeller)
    assert client.post(url, {"grade-target_cells": "2+"}).status_code == 403
    client.force_login(reviewer)
    page = client.get(f"/slides/{open_slide.pk}/verify/").content.decode()
    assert 'id="grade-target_cells"' in page and 'id="percent-schistocytes"' in page
    r = client.post(url, {"grade-target_cells": "2+", "percent-schistocytes": "1.5", "grade-sickle_cells": ""})
    assert r.status_code == 302 and r["Location"].endswith("#verify-red-cells")
    assert dict(RedCellGrade.objects.values_list("finding", "grade")) == {"target_cells": "2+", "schistocytes": "2+"}
    r = client.post(url, {"grade-target_cells": "5+"}, follow=True)
    assert "not a grade of this finding" in r.content.decode()
    assert RedCellGrade.objects.get(finding="target_cells").grade == "2+"


# --- signed: frozen, copied to a correction, on every format -----------------------------------
@pytest.fixture
def graded_signed_slide(labeller, reviewer, slides_model):
    slide = services.slide_create(code="RBC-0042", created_by=labeller, target_count=100)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    services.slide_process(slide_id=slide.pk)
    for c in slide.cells.order_by("id"):
        services.slide_cell_reclassify(cell=c, actor=reviewer, target="lymphocyte")
    morphology.slide_red_cells_grade(slide=slide, actor=reviewer, grades={"target_cells": "2+"},
                                     percents={"schistocytes": "0.8"})
    return services.slide_sign(slide=Slide.objects.get(pk=slide.pk), actor=reviewer, reason="one field")


def test_the_grades_are_frozen_at_signing_and_reach_every_format(graded_signed_slide, reviewer, client):
    slide = graded_signed_slide
    frozen = slide.report["red_cell_morphology"]["findings"]
    assert [(f["code"], f["grade"], f["percent"]) for f in frozen] == [("target_cells", "2+", None),
                                                                     ("schistocytes", "1+", 0.8)]
    rows = list(csv.reader(io.StringIO("\n".join(",".join(f'"{c}"' for c in r) for r in exports.report_csv_rows(slide)))))
    assert {r[2]: r[10] for r in rows}["rbc_schistocytes"] == "graded 1+ (few; 0.8 % of red cells)"
    doc = exports.fhir_report(slide)
    DiagnosticReport.model_validate(doc)
    assert "10381-2" in {o["code"]["coding"][0]["code"] for o in doc["contained"]}
    client.force_login(reviewer)
    page = client.get(f"/slides/{slide.pk}/report/").content.decode()
    assert 'data-finding="schistocytes"><td>Schistocytes</td><td class="rbc-grade" data-grade="1+">' in page
    # a correction starts from the same grades; the signed version stays as signed
    new = services.slide_correct(slide=slide, actor=reviewer, reason="regrade")
    assert dict(RedCellGrade.objects.filter(slide=new).values_list("finding", "grade")) == {
        "target_cells": "2+", "schistocytes": "1+"}
    morphology.slide_red_cells_grade(slide=new, actor=reviewer, grades={"target_cells": "3+"})
    assert slide_red_cells_section(slide=slide)["findings"][0]["grade"] == "2+"
