"""Slides end to end in the services: create, upload fields, process (detect, crop, classify),
verify, sign, correct. Uses real demo fields and a tiny trained model."""
import io

import pytest
from django.core.exceptions import ValidationError
from django.template.defaultfilters import floatformat
from django.template.loader import render_to_string
from PIL import Image
from pypdf import PdfReader

from annotations.models import AuditEvent, CellImage, LabSettings, Source
from slides import services
from slides.models import Slide, SlideCell
from slides.selectors import slide_differential
from tests.helpers import field_paths, png_bytes, rendered_texts


def _process(slide):
    slide.refresh_from_db()
    assert slide.task_state == Slide.TaskState.QUEUED
    out = services.slide_process(slide_id=slide.pk)
    assert out is not None, Slide.objects.get(pk=slide.pk).error
    return out


@pytest.fixture
def slide(labeller):
    return services.slide_create(code="S24-0001", created_by=labeller, wbc_count="7.5", target_count=100)


@pytest.mark.parametrize("code, reason", [
    ("Jane Doe", "not a name"),
    ("Smith", "looks like a name"),
    ("1984-03-12", "date"),
    ("AB-12.03.1984", "date"),
])
def test_create_refuses_identifying_codes_and_says_why(labeller, code, reason):
    with pytest.raises(ValidationError) as exc:
        services.slide_create(code=code, created_by=labeller)
    assert reason in " ".join(exc.value.message_dict["code"])
    assert not Slide.objects.exists()


def test_create_validates_target_and_wbc(labeller):
    with pytest.raises(ValidationError, match="target count"):
        services.slide_create(code="S1", created_by=labeller, target_count=150)
    with pytest.raises(ValidationError, match="WBC count"):
        services.slide_create(code="S1", created_by=labeller, wbc_count="-3")
    slide = services.slide_create(code="S1", created_by=labeller, wbc_count="4.2", target_count=400)
    assert slide.target_count == 400 and str(slide.wbc_count) == "4.20"
    assert AuditEvent.objects.filter(action="slide.create", target_id=str(slide.pk)).exists()


def test_fields_go_through_the_deidentified_upload_and_cells_are_found_and_classified(
        slide, labeller, slides_model, django_capture_on_commit_callbacks):
    paths = field_paths(2)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in paths],
                                           uploaded_by=labeller)
    assert len(result["stored"]) == 2 and not result["refused"]
    assert len(callbacks) == 1  # the processing task is queued after commit
    fields = CellImage.objects.filter(source=Source.FIELD)
    assert fields.count() == 2 and all(f.sample_code == "S24-0001" for f in fields)
    slide = _process(slide)
    assert slide.status == Slide.Status.READY and slide.task_state == Slide.TaskState.DONE
    assert slide.model_version == slides_model
    cells = list(slide.cells.select_related("image", "field__image", "final_class"))
    assert len(cells) >= 2
    for c in cells:
        assert c.image.source == Source.SLIDE_CELL
        w, h = c.field.image.width, c.field.image.height
        assert 0 <= c.x0 < c.x1 <= w and 0 <= c.y0 < c.y1 <= h
        assert c.predicted_class and c.final_class is not None
        if c.detector_kind == "wbc":
            assert c.model_version == slides_model and c.agreement_text == "1/1"
    assert slide.progress["cells"] == len(cells)
    # a second delivery of the task does nothing
    assert services.slide_process(slide_id=slide.pk) is None
    assert slide.cells.count() == len(cells)


class WorkerKilled(BaseException):
    """Stands for kill -9: not an Exception, so the processing cannot record a failure."""


def test_a_slide_whose_worker_died_is_queued_again_by_the_sweep_and_resumes_where_it_stopped(
        slide, labeller, slides_model, monkeypatch, django_capture_on_commit_callbacks):
    from datetime import timedelta

    import classifier.services
    from django.utils import timezone

    paths = field_paths(2)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in paths], uploaded_by=labeller)
    real_classify = classifier.services.images_classify

    def dies(**kwargs):
        raise WorkerKilled

    monkeypatch.setattr(classifier.services, "images_classify", dies)  # the worker dies after detecting
    with pytest.raises(WorkerKilled):
        services.slide_process(slide_id=slide.pk)
    slide.refresh_from_db()
    assert slide.task_state == Slide.TaskState.RUNNING and slide.fields.filter(detected=False).count() == 0
    detected = sorted(slide.cells.values_list("pk", "image_id"))
    assert detected and not slide.cells.exclude(predicted_class="").filter(detector_kind="wbc").exists()

    # Still showing progress a minute ago: the worker may be alive, so the sweep leaves it.
    Slide.objects.filter(pk=slide.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=1))
    assert services.slides_stalled_requeue(older_than_s=300) == 0
    # Silent for ten minutes: its worker died. Queued again, after the commit.
    Slide.objects.filter(pk=slide.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.slides_stalled_requeue(older_than_s=300) == 1
    assert len(callbacks) == 1
    assert services.slides_stalled_requeue(older_than_s=300) == 0  # queued once, not twice

    monkeypatch.setattr(classifier.services, "images_classify", real_classify)
    slide = _process(slide)
    assert slide.task_state == Slide.TaskState.DONE and slide.status == Slide.Status.READY
    # The detection already done is kept, not repeated; the classification is finished.
    assert sorted(slide.cells.values_list("pk", "image_id")) == detected
    assert not slide.cells.filter(detector_kind="wbc", predicted_class="").exists()


def test_abstained_cells_block_signing_until_an_expert_resolves_them(slide, labeller, reviewer, slides_model):
    LabSettings.objects.update(abstain_threshold=0.99)  # every cell abstains
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    slide = _process(slide)
    unresolved = [c for c in slide.cells.select_related("final_class") if c.unresolved]
    assert unresolved and all(c.final_class.is_abstain for c in unresolved)
    with pytest.raises(services.SlideNotReady, match="unidentified"):
        services.slide_sign(slide=slide, actor=reviewer)
    first, *rest = unresolved
    services.slide_cell_reclassify(cell=first, actor=reviewer, target="lymphocyte")
    for c in rest:
        services.slide_cell_reclassify(cell=c, actor=reviewer, target="not_counted")
    slide.refresh_from_db()
    assert slide.status == Slide.Status.VERIFIED
    d = slide_differential(slide=slide)
    assert d["unresolved"] == 0 and d["counts"].get("lymphocyte", 0) >= 1
    first.refresh_from_db()
    assert first.predicted_class == "unidentified" and first.final_class.code == "lymphocyte"  # the ledger
    with pytest.raises(services.SignatureNeedsReason) as exc:  # fewer cells than the target of 100
        services.slide_sign(slide=slide, actor=reviewer)
    assert exc.value.warnings == [f"Insufficient count: {d['leukocyte_total']} of the target 100 leukocytes counted."]
    signed = services.slide_sign(slide=slide, actor=reviewer, reason="  sparse smear; no better sample  ")
    assert signed.status == Slide.Status.SIGNED and signed.report["counts"] == d["counts"]
    assert signed.report["signed_by"] == "rev1"
    assert signed.sign_reason == signed.report["sign_reason"] == "sparse smear; no better sample"
    assert signed.report["sign_warnings"] == exc.value.warnings
    event = AuditEvent.objects.get(action="slide.sign", target_id=str(slide.pk))
    assert event.after["reason"] == "sparse smear; no better sample" and event.after["warnings"] == exc.value.warnings


def test_signed_slide_is_read_only_and_a_correction_makes_a_new_audited_version(slide, labeller, reviewer,
                                                                                 slides_model):
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    slide = _process(slide)
    for c in slide.cells.all():
        if c.unresolved:
            services.slide_cell_reclassify(cell=c, actor=reviewer, target="monocyte")
    if not slide_differential(slide=slide)["leukocyte_total"]:
        services.slide_cell_reclassify(cell=slide.cells.first(), actor=reviewer, target="monocyte")
    slide = services.slide_sign(slide=slide, actor=reviewer, reason="demo field")
    cell = slide.cells.first()
    with pytest.raises(services.SlideLocked, match="read-only"):
        services.slide_cell_reclassify(cell=cell, actor=reviewer, target="eosinophil")
    with pytest.raises(services.SlideLocked):
        services.slide_images_add(slide=slide, files=[("x.png", png_bytes())], uploaded_by=labeller)
    with pytest.raises(ValidationError):
        services.slide_correct(slide=slide, actor=reviewer, reason="")
    new = services.slide_correct(slide=slide, actor=reviewer, reason="eosinophil missed")
    assert (new.code, new.version, new.previous_id) == (slide.code, 2, slide.pk)
    assert new.cells.count() == slide.cells.count() and new.fields.count() == 1
    moved = new.cells.get(image=cell.image)
    services.slide_cell_reclassify(cell=moved, actor=reviewer, target="eosinophil")
    assert SlideCell.objects.get(pk=cell.pk).final_class.code != "eosinophil" or cell.final_class.code == "eosinophil"
    slide.refresh_from_db()
    assert slide.status == Slide.Status.SIGNED and slide.report is not None
    assert AuditEvent.objects.filter(action="slide.correct", target_id=str(slide.pk)).exists()
    assert AuditEvent.objects.filter(action="slide.create_version", target_id=str(new.pk)).exists()
    with pytest.raises(services.SlideLocked, match="newer version"):
        services.slide_correct(slide=slide, actor=reviewer, reason="again")


def test_reclassify_refuses_abstention_and_unknown_classes(slide, labeller, reviewer, slides_model):
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    slide = _process(slide)
    cell = slide.cells.first()
    with pytest.raises(ValidationError, match="abstention"):
        services.slide_cell_reclassify(cell=cell, actor=reviewer, target="unidentified")
    with pytest.raises(ValidationError, match="Unknown"):
        services.slide_cell_reclassify(cell=cell, actor=reviewer, target="dragon")
    services.slide_cell_reclassify(cell=cell, actor=reviewer, target="basophil")
    ev = AuditEvent.objects.filter(action="slide.cell_reclassify", target_id=str(cell.pk)).get()
    assert ev.after["class"] == "basophil" and ev.actor == reviewer


def test_bad_files_are_refused_with_a_reason_and_nothing_is_queued(slide, labeller):
    result = services.slide_images_add(slide=slide, files=[("notes.txt", b"hello")], uploaded_by=labeller)
    assert result["stored"] == [] and result["refused"][0]["name"] == "notes.txt"
    slide.refresh_from_db()
    assert slide.task_state == Slide.TaskState.IDLE and not slide.fields.exists()


def test_without_an_active_model_every_cell_waits_for_an_expert(slide, labeller):
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    slide = _process(slide)
    assert slide.model_version is None and slide.cells.exists()
    assert all(c.unresolved or c.detector_kind != "wbc" for c in slide.cells.select_related("final_class"))


def test_cropped_cells_can_be_uploaded_as_a_slide(labeller, slides_model, demo_cells):
    slide = services.slide_create(code="C-77", created_by=labeller, kind=Slide.Kind.CELLS)
    files = [(p.name, p.read_bytes()) for p in sorted((demo_cells / "lymphocyte").iterdir())[:3]]
    result = services.slide_images_add(slide=slide, files=files, uploaded_by=labeller)
    assert len(result["stored"]) == 3
    slide = _process(slide)
    assert slide.cells.count() == 3 and not slide.fields.exists()
    assert all(c.box is None and c.predicted_class for c in slide.cells.all())


def test_a_large_field_is_processed_in_tiles_with_boxes_in_field_pixels(slide, labeller, slides_model):
    # 2x2 mosaic of four 640x480 demo fields padded into a 3000x2200 field (> the tiling limit); the padding
    # has the fields' own background colour, as a large scan of one smear would
    big = Image.new("RGB", (3000, 2200), (208, 211, 206))
    for i, p in enumerate(field_paths(4)):
        big.paste(Image.open(p).convert("RGB"), (100 + (i % 2) * 1500, 100 + (i // 2) * 1100))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    services.slide_images_add(slide=slide, files=[("big.png", buf.getvalue())], uploaded_by=labeller)
    slide = _process(slide)
    cells = list(slide.cells.all())
    assert len(cells) >= 4
    quadrants = {((c.x0 > 1500), (c.y0 > 1100)) for c in cells}
    assert len(quadrants) == 4  # cells found in every part of the large field
    assert all(c.x1 <= 3000 and c.y1 <= 2200 for c in cells)
    scale = slide.fields.get().scale  # measured on the red cells at a resolution where they are resolved
    assert scale["source"] == "red cells" and 70 < scale["red_cell_diameter_px"] < 150


def test_a_count_at_its_target_signs_without_a_reason(slide, labeller, reviewer, slides_model):
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    slide = _process(slide)
    for c in slide.cells.all():
        services.slide_cell_reclassify(cell=c, actor=reviewer, target="lymphocyte")
    n = slide_differential(slide=slide)["leukocyte_total"]
    assert 0 < n < 100
    Slide.objects.filter(pk=slide.pk).update(target_count=n)  # the forms offer 100/200/400; the rule is n >= target
    signed = services.slide_sign(slide=Slide.objects.get(pk=slide.pk), actor=reviewer)
    assert signed.sign_reason == "" and signed.report["sign_warnings"] == []
    assert signed.report["flag_summary"]["insufficient"] is None
    assert signed.report["method"].endswith(", every cell verified by an expert.")


def test_the_method_line_says_how_many_cells_an_expert_verified(slide, labeller, reviewer, slides_model):
    """A slide signed with cells left on the model's call does not claim every cell was verified."""
    from annotations.models import CellClass
    from slides.pdf import report_pdf
    from slides.selectors import slide_report_release

    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(2)],
                              uploaded_by=labeller)
    slide = _process(slide)
    cells = list(slide.cells.filter(status=SlideCell.Status.COUNTED).order_by("id"))
    assert len(cells) >= 2
    services.slide_cell_reclassify(cell=cells[0], actor=reviewer, target="lymphocyte")
    # the others as the model would have left them had it accepted its call (the small test model
    # refers these BCCD fields' cells): a class, no expert decision
    monocyte = CellClass.objects.get(code="monocyte")
    SlideCell.objects.filter(pk__in=[c.pk for c in cells[1:]]).update(final_class=monocyte)
    slide = Slide.objects.get(pk=slide.pk)
    counted = slide.cells.filter(status=SlideCell.Status.COUNTED).count()
    left = slide.cells.filter(status=SlideCell.Status.COUNTED, changed_by__isnull=True).count()
    assert left == len(cells) - 1 and counted == len(cells)
    signed = services.slide_sign(slide=slide, actor=reviewer, reason="demo fields")
    expected = (f"{counted - left} of {counted} counted cells verified by an expert, "
                f"{left} counted on the model's call alone.")
    assert signed.report["method"].endswith(expected)
    assert "every cell verified" not in signed.report["method"]
    pdf = "".join(page.extract_text() for page in PdfReader(io.BytesIO(
        report_pdf(signed, release=slide_report_release(slide=signed)))).pages)
    assert "every cell verified" not in pdf and "counted on the model's call alone" in " ".join(pdf.split())


def test_each_field_records_the_scale_detection_used(labeller, slides_model):
    slide = services.slide_create(code="SC-1", created_by=labeller)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    slide = _process(slide)
    scale = slide.fields.get().scale
    assert scale["source"] == "red cells" and 0.03 < scale["microns_per_pixel"] < 0.15
    assert scale["red_cell_diameter_px"] > 50  # BCCD red cells are about 100 px across

    set_slide = services.slide_create(code="SC-2", created_by=labeller, microns_per_pixel="0.0745")
    assert set_slide.microns_per_pixel == 0.0745
    services.slide_images_add(slide=set_slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    set_slide = _process(set_slide)
    assert set_slide.fields.get().scale == {"microns_per_pixel": 0.0745, "source": "setting",
                                            "red_cell_diameter_px": None}
    with pytest.raises(ValidationError, match="between"):
        services.slide_create(code="SC-3", created_by=labeller, microns_per_pixel="7.5")


def test_classes_without_training_data_are_reported_as_not_assessed(slide, labeller, reviewer, slides_model):
    assert "blast" not in slides_model.classes and "atypical_lymphocyte" not in slides_model.classes
    # the random-weight model is unsure of every cell: a low threshold lets its calls count here
    LabSettings.objects.update(abstain_threshold=0.01)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(2)],
                              uploaded_by=labeller)
    slide = _process(slide)
    d = slide_differential(slide=slide)
    rows = {r["code"]: r for r in d["rows"]}
    assert rows["blast"]["not_assessed"] and rows["blast"]["note"] == "not assessed by the model — expert only"
    assert rows["atypical_lymphocyte"]["not_assessed"] and not rows["lymphocyte"]["not_assessed"]
    assert {"blast", "atypical_lymphocyte"} <= set(d["not_assessed"])
    blasts = next(f for f in d["flags"] if f["codes"] == ["blast"])
    assert blasts["status"] == "not_assessed" and blasts["value"] is None  # not "Blasts (%) 0.00"
    # an expert assigns a blast: counted, still marked as the expert's alone
    services.slide_cell_reclassify(cell=slide.cells.first(), actor=reviewer, target="blast")
    d = slide_differential(slide=slide)
    row = next(r for r in d["rows"] if r["code"] == "blast")
    assert row["count"] == 1 and row["percent"] > 0 and row["not_assessed"]
    assert next(f for f in d["flags"] if f["codes"] == ["blast"])["status"] != "not_assessed"


def test_once_every_counted_cell_is_verified_blasts_are_the_experts_count_with_their_interval(
        slide, labeller, reviewer, slides_model):
    from annotations.models import CellClass
    from slides import exports, selectors
    from slides.pdf import report_pdf

    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(2)],
                              uploaded_by=labeller)
    slide = _process(slide)
    classes = list(CellClass.objects.all())
    cells = list(slide.cells.order_by("id"))
    assert len(cells) >= 2
    for cell in cells[:-1]:
        services.slide_cell_reclassify(cell=cell, actor=reviewer, target="lymphocyte")
    # one counted cell not verified: it could be a blast the model cannot name
    assert {"blast", "atypical_lymphocyte"} <= selectors.slide_not_assessed_codes(slide=slide, classes=classes)
    assert selectors.slide_expert_counted_codes(slide=slide, classes=classes) == set()
    d = slide_differential(slide=slide)
    assert next(f for f in d["flags"] if f["codes"] == ["blast"])["status"] == "not_assessed"
    html = render_to_string("slides/_differential.html", {"diff": d})
    assert rendered_texts(html, "data-pct-for", "blast") == ["not assessed by the model — expert only"]
    assert rendered_texts(html, "data-ci-for", "blast") == []

    services.slide_cell_reclassify(cell=cells[-1], actor=reviewer, target="monocyte")
    assert selectors.slide_not_assessed_codes(slide=slide, classes=classes) == set()
    assert {"blast", "atypical_lymphocyte"} <= selectors.slide_expert_counted_codes(slide=slide, classes=classes)
    d = slide_differential(slide=slide)
    n = d["leukocyte_total"]
    assert n == len(cells) and d["not_assessed"] == [] and "blast" in d["expert_counted"]
    blast = next(r for r in d["rows"] if r["code"] == "blast")
    assert blast["count"] == 0 and blast["percent"] == 0.0 and not blast["not_assessed"] and blast["expert_counted"]
    assert blast["interval"][0] == 0.0 and blast["interval"][1] == stats_interval_high(n)
    assert blast["note"] == "counted by the expert; not pre-classified by the model"
    rule = next(f for f in d["flags"] if f["codes"] == ["blast"])
    assert rule["value"] == 0.0 and rule["interval"] == blast["interval"] and rule["flag"] == ""
    assert rule["status"] == "insufficient"  # fewer than the target of 100: evaluated, no flag either way
    assert rule["note"] == "counted by the expert; not pre-classified by the model"
    html = render_to_string("slides/_differential.html", {"diff": d})
    assert rendered_texts(html, "data-pct-for", "blast") == ["0.0"]
    assert rendered_texts(html, "data-ci-for", "blast") == [f"0.0–{floatformat(blast['interval'][1], 1)}"]
    assert rendered_texts(html, "data-note-for", "blast") == ["counted by the expert; not pre-classified by the model"]

    slide = services.slide_sign(slide=Slide.objects.get(pk=slide.pk), actor=reviewer, reason="two demo fields")
    rows = exports.report_csv_rows(slide)
    col = {name: i for i, name in enumerate(rows[0])}
    row = next(r for r in rows if r[col["class"]] == "blast")
    assert (row[col["count"]], row[col["percent"]], row[col["ci95_low"]], row[col["ci95_high"]]) == (
        0, 0.0, 0.0, blast["interval"][1])
    assert row[col["note"]] == "counted by the expert; not pre-classified by the model"
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(
        report_pdf(slide, release=selectors.slide_report_release(slide=slide)))).pages)
    text = " ".join(text.split())
    assert "Blast (counted by the expert; not pre-classified by the model) 0 0.0" in text
    assert "not assessed" not in text


def stats_interval_high(n: int) -> float:
    from slides import stats

    return stats.proportion_interval(0, n)[1]


def test_blast_is_in_the_taxonomy_and_reference_intervals_name_known_classes_only(lab_admin):
    from django.apps import apps

    from annotations.models import CellClass
    from slides.models import ReferenceInterval

    blast = CellClass.objects.get(code="blast")
    assert blast.is_leukocyte and blast.active and not blast.is_abstain
    assert CellClass.objects.filter(code="atypical_lymphocyte", active=True).exists()
    services.reference_interval_save(actor=lab_admin, name="Blasts", codes="blast", measure="percent", high=0.0)
    with pytest.raises(ValidationError, match="Unknown class"):
        services.reference_interval_save(actor=lab_admin, name="X", codes="blast+promonocyte", measure="percent")
    # the data migration: an interval naming an unknown code loses it (audited); none left -> inactive
    import importlib

    migration = importlib.import_module("slides.migrations.0004_reference_intervals_known_codes")
    mixed = ReferenceInterval.objects.create(name="Mixed", codes="monocyte+promonocyte", measure="percent")
    unknown = ReferenceInterval.objects.create(name="Unknown", codes="promonocyte", measure="percent")
    migration.fix_unknown_codes(apps, None)
    mixed.refresh_from_db()
    unknown.refresh_from_db()
    assert (mixed.codes, mixed.active) == ("monocyte", True)
    assert (unknown.codes, unknown.active) == ("promonocyte", False)
    event = AuditEvent.objects.get(action="slide.reference_interval", target_id=str(mixed.pk))
    assert event.before["codes"] == "monocyte+promonocyte" and "promonocyte" in event.after["reason"]
