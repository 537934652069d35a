"""Slides end to end in the services: create, upload fields, process (detect, crop, classify),
verify, sign, correct. Uses real demo fields and a tiny trained model."""
import io

import pytest
from django.core.exceptions import ValidationError
from PIL import Image

from annotations.models import AuditEvent, CellImage, LabSettings, Source
from slides import services
from slides.models import Slide, SlideCell
from slides.selectors import slide_differential
from tests.conftest import png_bytes

from .conftest import field_paths


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
        slide, labeller, active_model, django_capture_on_commit_callbacks):
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
    assert slide.model_version == active_model
    cells = list(slide.cells.select_related("image", "field__image", "final_class"))
    assert len(cells) >= 2
    for c in cells:
        assert c.image.source == Source.SLIDE_CELL
        w, h = c.field.image.width, c.field.image.height
        assert 0 <= c.x0 < c.x1 <= w and 0 <= c.y0 < c.y1 <= h
        assert c.predicted_class and c.final_class is not None
        if c.detector_kind == "wbc":
            assert c.model_version == active_model and c.agreement_text == "1/1"
    assert slide.progress["cells"] == len(cells)
    # a second delivery of the task does nothing
    assert services.slide_process(slide_id=slide.pk) is None
    assert slide.cells.count() == len(cells)


class WorkerKilled(BaseException):
    """Stands for kill -9: not an Exception, so the processing cannot record a failure."""


def test_a_slide_whose_worker_died_is_queued_again_by_the_sweep_and_resumes_where_it_stopped(
        slide, labeller, active_model, monkeypatch, django_capture_on_commit_callbacks):
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


def test_abstained_cells_block_signing_until_an_expert_resolves_them(slide, labeller, reviewer, active_model):
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
    signed = services.slide_sign(slide=slide, actor=reviewer)
    assert signed.status == Slide.Status.SIGNED and signed.report["counts"] == d["counts"]
    assert signed.report["signed_by"] == "rev1"


def test_signed_slide_is_read_only_and_a_correction_makes_a_new_audited_version(slide, labeller, reviewer,
                                                                                 active_model):
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in field_paths(1)],
                              uploaded_by=labeller)
    slide = _process(slide)
    for c in slide.cells.all():
        if c.unresolved:
            services.slide_cell_reclassify(cell=c, actor=reviewer, target="monocyte")
    if not slide_differential(slide=slide)["leukocyte_total"]:
        services.slide_cell_reclassify(cell=slide.cells.first(), actor=reviewer, target="monocyte")
    slide = services.slide_sign(slide=slide, actor=reviewer)
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


def test_reclassify_refuses_abstention_and_unknown_classes(slide, labeller, reviewer, active_model):
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


def test_cropped_cells_can_be_uploaded_as_a_slide(labeller, active_model, demo_cells):
    slide = services.slide_create(code="C-77", created_by=labeller, kind=Slide.Kind.CELLS)
    files = [(p.name, p.read_bytes()) for p in sorted((demo_cells / "lymphocyte").iterdir())[:3]]
    result = services.slide_images_add(slide=slide, files=files, uploaded_by=labeller)
    assert len(result["stored"]) == 3
    slide = _process(slide)
    assert slide.cells.count() == 3 and not slide.fields.exists()
    assert all(c.box is None and c.predicted_class for c in slide.cells.all())


def test_a_large_field_is_processed_in_tiles_with_boxes_in_field_pixels(slide, labeller, active_model):
    # 2x2 mosaic of four 640x480 demo fields padded into a 3000x2200 field (> the tiling limit)
    big = Image.new("RGB", (3000, 2200), (236, 226, 226))
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
