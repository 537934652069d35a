"""A small lab's worth of cells in every state an export must carry, and the snapshot a round trip compares."""
import datetime as dt

from annotations.models import Adjudication, CellImage, Label, LabSettings, Source, UploadBatch
from annotations.services import adjudication_submit, label_submit
from tests.factories import CellImageFactory, SourceFactory, cell_class


def cell(user, seed: int, *, split="train", source=Source.CELL, sample_code=""):
    return CellImageFactory(uploaded_by=user, split=split, source=source, sample_code=sample_code,
                            color=(seed, 40, 90), size=(40, 32))


def make_lab_data(*, labeller, labeller2, reviewer, model_version=None) -> dict:
    """Cells decided by agreement, by adjudication and by slide verification; one changed reading
    (superseded) against a model suggestion; one held-out cell still waiting; one never read."""
    LabSettings.objects.filter(pk=LabSettings.get().pk).update(labels_required_train=1, labels_required_heldout=2)
    agreed = cell(labeller, 1)
    label_submit(image=agreed, labeller=labeller, cell_class=cell_class("lymphocyte"))
    label_submit(image=agreed, labeller=labeller2, cell_class=cell_class("lymphocyte"))
    disputed = cell(labeller, 2, split="heldout")
    label_submit(image=disputed, labeller=labeller, cell_class=cell_class("lymphocyte"))
    label_submit(image=disputed, labeller=labeller2, cell_class=cell_class("monocyte"), unsure=True)
    disputed.refresh_from_db()
    assert disputed.needs_review
    adjudication_submit(image=disputed, reviewer=reviewer, cell_class=cell_class("monocyte"),
                        note="kidney-shaped nucleus")
    changed = cell(labeller, 3)
    label_submit(image=changed, labeller=labeller, cell_class=cell_class("monocyte"),
                 suggested_class=cell_class("monocyte"), suggestion_model_version=model_version)
    label_submit(image=changed, labeller=labeller, cell_class=cell_class("eosinophil"),
                 suggested_class=cell_class("monocyte"), suggestion_model_version=model_version,
                 suggestion_referred=True)  # the model had referred it: its best guess
    waiting = cell(labeller, 4, split="heldout", sample_code="S-204")
    CellImage.objects.filter(pk=waiting.pk).update(acquisition_source=SourceFactory(name="Scope B"))
    label_submit(image=waiting, labeller=labeller2, cell_class=cell_class("basophil"))
    unread = cell(labeller, 5)
    slide_cell = cell(labeller, 6, source=Source.SLIDE_CELL, sample_code="ACC-0042")
    label_submit(image=slide_cell, labeller=reviewer, cell_class=cell_class("neutrophil_segmented"),
                 suggested_class=cell_class("neutrophil_band"), suggestion_model_version=model_version)
    unverified_slide_cell = cell(labeller, 7, source=Source.SLIDE_CELL, sample_code="ACC-0042")
    field = cell(labeller, 8, source=Source.FIELD, sample_code="ACC-0042")
    return {"agreed": agreed, "disputed": disputed, "changed": changed, "waiting": waiting, "unread": unread,
            "slide_cell": slide_cell, "unverified_slide_cell": unverified_slide_cell, "field": field}


def _t(value: dt.datetime | None):
    return value.astimezone(dt.timezone.utc) if value else None


def snapshot(*, reader_name=lambda user: user.get_username()) -> dict:
    """Everything a round trip must reproduce, by sha256: the pixels' file, the cell's values, its
    final class, every reading (current and superseded) and the adjudication. Every cell an export
    with status "all" takes: not slide fields, nor slide cells no reviewer verified."""
    out = {}
    exported = CellImage.objects.exclude(source=Source.FIELD).exclude(source=Source.SLIDE_CELL, labels__isnull=True)
    for image in exported.distinct().select_related("final_label", "acquisition_source"):
        with image.file.open("rb") as fh:
            pixels = fh.read()
        readings = sorted(
            (reader_name(lb.labeller), lb.cell_class.code, lb.unsure, _t(lb.created_at), _t(lb.superseded_at),
             lb.suggested_class.code if lb.suggested_class_id else None, lb.confirmed_suggestion,
             lb.suggestion_referred)
            for lb in Label.objects.filter(image=image).select_related("labeller", "cell_class", "suggested_class"))
        adjudications = [(reader_name(a.reviewer), a.cell_class.code, _t(a.created_at), a.note)
                         for a in Adjudication.objects.filter(image=image).select_related("reviewer", "cell_class")]
        out[image.sha256] = {
            "pixels": pixels, "split": image.split, "source": image.source, "width": image.width,
            "height": image.height, "original_format": image.original_format, "uploaded_at": _t(image.uploaded_at),
            "sample_code": image.sample_code, "final": image.final_label.code if image.final_label_id else None,
            "final_at": _t(image.final_label_at), "needs_review": image.needs_review,
            "current_label_count": image.current_label_count, "readings": readings, "adjudications": adjudications,
            "acquisition_source": image.acquisition_source.name,
        }
    return out


def flush_cells(*users) -> None:
    """Empty the cell tables and their files, as a fresh database would be (the taxonomy stays)."""
    from django.conf import settings
    import shutil
    from pathlib import Path

    from classifier.models import Prediction

    Adjudication.objects.all().delete()
    Label.objects.all().delete()
    Prediction.objects.all().delete()
    CellImage.objects.all().delete()
    UploadBatch.objects.all().delete()
    shutil.rmtree(Path(settings.MEDIA_ROOT) / "images", ignore_errors=True)
    for user in users:
        from annotations.models import AuditEvent

        AuditEvent.objects.filter(actor=user).update(actor=None)
        user.delete()
