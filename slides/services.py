"""Writes for slides: create, upload fields or cells, process (detect, crop, classify),
reclassify, sign, correct (new version), reference intervals."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from functools import partial

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from PIL import Image

from annotations.deid import deidentified_code_problem
from annotations.imaging import ImageRejected
from annotations.audit import audit_record
from annotations.models import AuditAction, CellClass, LabSettings, Source, Split
from annotations.services import LabelConflict, image_upload, label_submit, referred_cell_message
from classifier import services as classifier_services
from classifier.models import Prediction
from classifier.selectors import model_version_active
from leukoportal.queueing import enqueue_on_commit
from lis import outbox as lis_outbox
from leukoportal.roles import REVIEWER, has_role
from sources.selectors import source_resolve

from . import exports, pipeline, release
from .detection import scale as detection_scale
from .exceptions import SlideLocked, check_editable
from .models import ReferenceInterval, Slide, SlideCell, SlideField
from .morphology.services import red_cell_grades_copy
from .platelets import services as platelet_services
from .selectors import slide_cells_blind, slide_differential, slide_method_text, slide_sign_warnings

log = logging.getLogger(__name__)

MAX_NOTES = 2000
MAX_WBC = Decimal("1000")


class SlideNotReady(Exception):
    """Signing is refused; the message says what is missing."""


# How the services refuse to edit a slide: locked, or an input they do not accept.
EDIT_REFUSALS = (SlideLocked, ValidationError)


class SignatureNeedsReason(SlideNotReady):
    """Warnings stand (e.g. fewer cells than the target): signing needs a written reason."""

    def __init__(self, warnings: list[str]):
        self.warnings = list(warnings)
        super().__init__("Signing needs a reason because: " + " ".join(self.warnings))


# --- Create --------------------------------------------------------------------------------
def _clean_code(code: str) -> str:
    code = (code or "").strip()
    if not code:
        raise ValidationError({"code": "An accession code is required."})
    problem = deidentified_code_problem(code)
    if problem:
        raise ValidationError({"code": problem})
    return code


def _clean_wbc(wbc_count) -> Decimal | None:
    if wbc_count in (None, ""):
        return None
    try:
        value = Decimal(str(wbc_count))
    except (InvalidOperation, ValueError):
        raise ValidationError({"wbc_count": "The WBC count must be a number (10^9/L)."}) from None
    if not value.is_finite() or value <= 0 or value > MAX_WBC:
        raise ValidationError({"wbc_count": "The WBC count must be above 0 and at most 1000 (10^9/L)."})
    return value.quantize(Decimal("0.01"))


def _clean_target(target_count) -> int:
    try:
        target = int(target_count)
    except (TypeError, ValueError):
        target = -1
    if target not in Slide.TARGETS:
        raise ValidationError({"target_count": f"The target count must be one of {', '.join(map(str, Slide.TARGETS))}."})
    return target


def _clean_scale(microns_per_pixel) -> float | None:
    if microns_per_pixel in (None, ""):
        return None
    try:
        value = float(microns_per_pixel)
    except (TypeError, ValueError):
        raise ValidationError({"microns_per_pixel": "The scale must be a number (µm per pixel)."}) from None
    lo, hi = detection_scale.MIN_MICRONS_PER_PIXEL, detection_scale.MAX_MICRONS_PER_PIXEL
    if not lo <= value <= hi:
        raise ValidationError({"microns_per_pixel": f"The scale must be between {lo} and {hi} µm per pixel "
                                                    "(leave it blank to measure it on the red cells)."})
    return value


def slide_create(*, code: str, created_by, wbc_count=None, notes: str = "", target_count=100,
                 kind: str = Slide.Kind.FIELDS, microns_per_pixel=None, acquisition_source=None) -> Slide:
    """A new slide; ``acquisition_source`` (a source, its id or name, an active one; none: the lab's
    default) is the microscope/camera its fields or cells come from, and theirs."""
    code = _clean_code(code)
    source = source_resolve(value=acquisition_source)
    wbc = _clean_wbc(wbc_count)
    target = _clean_target(target_count)
    scale = _clean_scale(microns_per_pixel)
    if kind not in Slide.Kind.values:
        raise ValidationError({"kind": f"Unknown kind; use one of {', '.join(Slide.Kind.values)}."})
    notes = (notes or "").strip()
    if len(notes) > MAX_NOTES:
        raise ValidationError({"notes": f"Notes are limited to {MAX_NOTES} characters."})
    if Slide.objects.filter(code=code).exists():
        raise ValidationError({"code": f"A slide with the code {code} exists; correct its signed version instead."})
    with transaction.atomic():
        slide = Slide.objects.create(code=code, created_by=created_by, wbc_count=wbc, notes=notes,
                                     target_count=target, kind=kind, status=Slide.Status.PROCESSING,
                                     microns_per_pixel=scale, acquisition_source=source)
        audit_record(actor=created_by, action=AuditAction.SLIDE_CREATE, target=slide,
                     after={"code": code, "wbc_count": str(wbc) if wbc else None, "target": target, "kind": kind,
                            "microns_per_pixel": scale, "acquisition_source": source.pk})
    return slide


_KEEP = object()


def slide_update(*, slide: Slide, actor, wbc_count=None, notes: str | None = None, target_count=None,
                 microns_per_pixel=_KEEP) -> Slide:
    """Change the WBC count, notes, target or scale setting of a slide that is not signed. The
    scale applies to the fields detected after the change."""
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        check_editable(slide)
        before = {"wbc_count": str(slide.wbc_count) if slide.wbc_count else None, "notes": slide.notes,
                  "target": slide.target_count, "microns_per_pixel": slide.microns_per_pixel}
        slide.wbc_count = _clean_wbc(wbc_count)
        if microns_per_pixel is not _KEEP:
            slide.microns_per_pixel = _clean_scale(microns_per_pixel)
        if notes is not None:
            if len(notes) > MAX_NOTES:
                raise ValidationError({"notes": f"Notes are limited to {MAX_NOTES} characters."})
            slide.notes = notes.strip()
        if target_count is not None:
            slide.target_count = _clean_target(target_count)
        slide.save(update_fields=["wbc_count", "notes", "target_count", "microns_per_pixel"])
        audit_record(actor=actor, action=AuditAction.SLIDE_UPDATE, target=slide, before=before,
                     after={"wbc_count": str(slide.wbc_count) if slide.wbc_count else None, "notes": slide.notes,
                            "target": slide.target_count, "microns_per_pixel": slide.microns_per_pixel})
    return slide


# --- Upload --------------------------------------------------------------------------------
def slide_images_add(*, slide: Slide, files: Iterable[tuple[str, bytes]], uploaded_by) -> dict:
    """Store fields (or, for a slide of kind 'cells', cropped cells) through the de-identified
    upload service and queue the processing. Each bad file is refused with its reason."""
    check_editable(slide)
    stored, refused = [], []
    source = Source.FIELD if slide.kind == Slide.Kind.FIELDS else Source.SLIDE_CELL
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        check_editable(slide)
        if slide.task_state == Slide.TaskState.RUNNING:
            raise SlideLocked("The slide is being processed; add more images when it is done.")
        position = slide.fields.count()
        for name, data in files:
            try:
                outcome = image_upload(data=data, uploaded_by=uploaded_by, source=source, sample_code=slide.code,
                                       enqueue_classification=False, acquisition_source=slide.acquisition_source)
            except ImageRejected as exc:
                refused.append({"name": name, "reason": exc.message})
                continue
            image = outcome.image
            if slide.kind == Slide.Kind.FIELDS:
                if image.source != Source.FIELD:
                    refused.append({"name": name, "reason": "This image is already stored as a cell image, not a field."})
                    continue
                _, created = SlideField.objects.get_or_create(slide=slide, image=image, defaults={"position": position})
                if not created:
                    refused.append({"name": name, "reason": "This field is already part of the slide."})
                    continue
                position += 1
            else:
                if slide.cells.filter(image=image).exists():
                    refused.append({"name": name, "reason": "This cell is already part of the slide."})
                    continue
                SlideCell.objects.create(slide=slide, image=image)
            stored.append({"name": name, "image": image.pk, "width": image.width, "height": image.height})
        if stored:
            _processing_queue(slide)
            audit_record(actor=uploaded_by, action=AuditAction.SLIDE_IMAGES_ADD, target=slide,
                         after={"stored": [s["image"] for s in stored], "refused": len(refused), "kind": slide.kind})
    return {"stored": stored, "refused": refused}


def _enqueue_processing(slide_id: int) -> None:
    enqueue_on_commit("slides.tasks.process_slide", slide_id)


def _processing_queue(slide: Slide) -> None:
    """Mark the slide's processing queued (from now, from its start, with no error) and send its task
    once the transaction commits (the caller holds the transaction)."""
    slide.status = Slide.Status.PROCESSING
    slide.task_state = Slide.TaskState.QUEUED
    slide.heartbeat_at = timezone.now()
    slide.progress = {"stage": "queued"}
    slide.error = ""
    slide.save(update_fields=["status", "task_state", "heartbeat_at", "progress", "error"])
    _enqueue_processing(slide.pk)


def slide_processing_retry(*, slide: Slide, actor) -> Slide:
    """Queue a failed (or stuck) processing again; the work already done is kept."""
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        check_editable(slide)
        if slide.task_state == Slide.TaskState.QUEUED:
            return slide
        _processing_queue(slide)
        audit_record(actor=actor, action=AuditAction.SLIDE_RETRY, target=slide)
    return slide


def slides_stalled_requeue(*, older_than_s: int = 300) -> int:
    """Queue again the processing of slides whose worker died: running, no progress for ``older_than_s``
    seconds (progress is written at least once per field and per batch of cells). Each is switched back
    with a conditional UPDATE, so two sweeps never queue one slide twice; the work already done is kept
    and the processing resumes where it stopped."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    stalled = Slide.objects.filter(task_state=Slide.TaskState.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
    requeued = 0
    for slide in stalled.only("pk", "heartbeat_at"):
        with transaction.atomic():
            switched = Slide.objects.filter(pk=slide.pk, task_state=Slide.TaskState.RUNNING,
                                            heartbeat_at=slide.heartbeat_at).update(
                task_state=Slide.TaskState.QUEUED, heartbeat_at=timezone.now(),
                progress={"stage": "queued", "resumed": True},
            )
            if not switched:  # it moved on meanwhile
                continue
            audit_record(actor=None, action=AuditAction.SLIDE_PROCESS_RESUMED, target=slide,
                         after={"last_sign_of_life": slide.heartbeat_at.isoformat() if slide.heartbeat_at else None})
            _enqueue_processing(slide.pk)
        requeued += 1
    if requeued:
        log.warning("Queued again the processing of %d slide(s) whose worker stopped.", requeued)
    return requeued


def slides_queued_resend(*, older_than_s: int = 120) -> int:
    """Send again the message of slides queued for more than ``older_than_s`` seconds (it was lost with
    the broker, or never sent). A second message is harmless: processing claims the slide with a
    conditional UPDATE. The heartbeat moves on, so a slide is resent at most once per period."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    ids = list(Slide.objects.filter(task_state=Slide.TaskState.QUEUED).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)).values_list("pk", flat=True))
    resent = 0
    for slide_id in ids:
        with transaction.atomic():
            if Slide.objects.filter(pk=slide_id, task_state=Slide.TaskState.QUEUED).update(heartbeat_at=timezone.now()):
                _enqueue_processing(slide_id)
                resent += 1
    return resent


# --- Processing ----------------------------------------------------------------------------
def _progress(slide_id: int, **info) -> None:
    """Progress for the page, and the heartbeat that tells the sweep this worker is alive."""
    Slide.objects.filter(pk=slide_id).update(progress=info, heartbeat_at=timezone.now())


def _field_find(field: SlideField, microns_per_pixel: float | None = None) -> pipeline.FieldCells:
    """Detect and crop the cells of one field at its scale (pure work: no database)."""
    with default_storage.open(field.image.file.name, "rb") as handle:
        image = Image.open(handle)
        image.load()
    return pipeline.find_cells(image, microns_per_pixel=microns_per_pixel)


def _field_detect(*, slide: Slide, field: SlideField, result: pipeline.FieldCells | None = None) -> int:
    """Store the cells found in one field and the scale used (one transaction: all or nothing)."""
    if result is None:
        result = _field_find(field, slide.microns_per_pixel)
    found = result.cells
    classes = {c.code: c for c in CellClass.objects.filter(code__in=pipeline.NON_LEUKOCYTE_KINDS)}
    with transaction.atomic():
        field = SlideField.objects.select_for_update().get(pk=field.pk)
        if field.detected:
            return 0
        for cell in found:
            # the pipeline's own crop: one clipped at the field's border may be narrower than an
            # upload may be, and a cell the detector counted must stay in the count (min_side=1)
            outcome = image_upload(data=pipeline.png_bytes(cell.crop), uploaded_by=slide.created_by,
                                   source=Source.SLIDE_CELL, sample_code=slide.code, enqueue_classification=False,
                                   min_side=1, acquisition_source=slide.acquisition_source)
            x0, y0, x1, y1 = cell.box
            pre = "" if cell.needs_model else cell.kind
            SlideCell.objects.create(
                slide=slide, field=field, x0=x0, y0=y0, x1=x1, y1=y1, detector_kind=cell.kind,
                detector_score=cell.score, image=outcome.image, predicted_class=pre, top_class=pre,
                confidence=cell.score if pre else None, final_class=classes.get(pre) if pre else None,
            )
        field.detected = True
        field.n_cells = len(found)
        field.scale = result.scale.as_dict()
        field.save(update_fields=["detected", "n_cells", "scale"])
    return len(found)


def _apply_predictions(*, slide: Slide, version) -> int:
    """The model's pre-classification of the slide's cells. A cell the lab reads blind (a held-out cell
    uploaded again, not decided yet: ``LabSettings.reads_blind``) is referred to the verifier, whatever
    the model called it: its class on the slide would show the hidden call, and its verifier classifies
    it without the model."""
    cells = list(slide.cells.filter(predicted_class="").select_related("image"))
    if not cells:
        return 0
    preds = {p.image_id: p for p in Prediction.objects.filter(model_version=version,
                                                              image_id__in=[c.image_id for c in cells])}
    classes = {c.code: c for c in CellClass.objects.all()}
    abstain = CellClass.objects.filter(is_abstain=True).first()
    lab = LabSettings.get()
    updated = 0
    for cell in cells:
        p = preds.get(cell.image_id)
        if p is None:
            continue
        cell.predicted_class, cell.top_class = p.label, p.top_class
        cell.confidence, cell.agreement, cell.n_backbones = p.confidence, p.agreement, p.n_backbones
        cell.reasons, cell.ood_score = list(p.reasons or []), p.ood_score
        cell.model_version = version
        if cell.final_class_id is None:
            blind = lab.reads_blind(image=cell.image)
            cell.final_class = abstain if p.abstained or blind else classes.get(p.label, abstain)
        cell.save(update_fields=["predicted_class", "top_class", "confidence", "agreement", "n_backbones",
                                 "reasons", "ood_score", "model_version", "final_class"])
        updated += 1
    return updated


def slide_process(*, slide_id: int) -> Slide | None:
    """Detect, crop and classify. Claimed with a conditional UPDATE (a second delivery does
    nothing); each step only does what is missing, so a retry resumes where it stopped."""
    claimed = Slide.objects.filter(pk=slide_id, task_state=Slide.TaskState.QUEUED).update(
        task_state=Slide.TaskState.RUNNING, progress={"stage": "starting"}, heartbeat_at=timezone.now()
    )
    if not claimed:
        log.info("Slide %s is not queued; nothing to do.", slide_id)
        return None
    slide = Slide.objects.get(pk=slide_id)
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        fields = list(slide.fields.filter(detected=False).select_related("image"))
        # Detection of the next fields runs in a second thread while this one stores a field's cells.
        with ThreadPoolExecutor(max_workers=2) as pool:
            find = partial(_field_find, microns_per_pixel=slide.microns_per_pixel)
            for i, (field, result) in enumerate(zip(fields, pool.map(find, fields))):
                _progress(slide_id, stage="detecting", done=i, total=len(fields))
                _field_detect(slide=slide, field=field, result=result)
        timings["detect_crop_store"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        platelet_services.slide_platelets_detect(
            slide=slide, progress=lambda done, total: _progress(slide_id, stage="platelets", done=done, total=total))
        timings["platelets_red_cells"] = round(time.perf_counter() - t0, 3)

        version = slide.model_version or model_version_active()
        todo = list(slide.cells.filter(predicted_class="").values_list("image_id", flat=True))
        t0 = time.perf_counter()
        if version is not None and todo:
            _progress(slide_id, stage="classifying", done=0, total=len(todo))
            classifier_services.images_classify(image_ids=todo, model_version_id=version.pk,
                            progress=lambda done: _progress(slide_id, stage="classifying", done=done, total=len(todo)))
            _apply_predictions(slide=slide, version=version)
        timings["classify"] = round(time.perf_counter() - t0, 3)
        # Without a model every remaining cell waits for an expert.
        abstain = CellClass.objects.filter(is_abstain=True).first()
        slide.cells.filter(final_class__isnull=True).update(final_class=abstain)
    except Exception as exc:  # recorded on the row; the page offers a retry
        log.exception("Processing slide %s failed", slide_id)
        Slide.objects.filter(pk=slide_id).update(
            task_state=Slide.TaskState.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000],
            progress={"stage": "failed"},
        )
        audit_record(actor=None, action=AuditAction.SLIDE_PROCESS_FAILED, target=slide, after={"error": str(exc)[:500]})
        return None
    n_cells = slide.cells.count()
    unresolved = _unresolved_count(slide)
    Slide.objects.filter(pk=slide_id).update(
        task_state=Slide.TaskState.DONE,
        status=Slide.Status.READY,  # a reviewer verifies
        model_version=version,
        progress={"stage": "done", "cells": n_cells, "unresolved": unresolved, "seconds": timings,
                  "model_version": version.pk if version else None},
    )
    audit_record(actor=None, action=AuditAction.SLIDE_PROCESSED, target=slide,
                 after={"cells": n_cells, "unresolved": unresolved, "model_version": version.pk if version else None})
    return Slide.objects.get(pk=slide_id)


def _unresolved_count(slide: Slide) -> int:
    return slide.cells.filter(status=SlideCell.Status.COUNTED).filter(
        Q(final_class__isnull=True) | Q(final_class__is_abstain=True)
    ).count()


# --- Verification --------------------------------------------------------------------------
NOT_COUNTED = "not_counted"
COUNTED = "counted"
CONFIRM = "confirm"


def _confirmed_class(cell: SlideCell) -> CellClass:
    """The class 'confirm' keeps: the counted cell's current class. Refused where there is none to
    confirm, above all on a cell the model referred (its top class is a best guess, not a call)."""
    if cell.status != SlideCell.Status.COUNTED:
        raise ValidationError({"target": "This cell is not counted: count it again, or choose a class."})
    if cell.final_class is None or cell.final_class.is_abstain:
        if cell.referred:
            guess = CellClass.objects.filter(code=cell.top_class).first()
            raise ValidationError({"target": referred_cell_message(
                reason=cell.reason, best_guess=guess.name if guess else cell.top_class, confidence=cell.confidence)})
        raise ValidationError({"target": "The model made no call on this cell: choose a class."})
    return cell.final_class


def slide_cell_reclassify(*, cell: SlideCell, actor, target: str) -> SlideCell:
    """An expert's decision on one cell. ``target``: an active class code (the cell's current
    class confirms it), 'confirm' (keep the cell's current class: refused on an unidentified cell,
    whose model's top class is only a best guess), 'not_counted' or 'counted'. A class is also the
    expert's label of the cell's image, recorded against the model's suggestion (its call, or the
    best guess of a referred cell), so that verified cells train the next model. Audited; the
    slide's status follows (verified when no counted cell is left unidentified)."""
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=cell.slide_id)
        check_editable(slide)
        if slide.task_state in (Slide.TaskState.RUNNING, Slide.TaskState.QUEUED):
            raise SlideLocked("The slide is still being processed; wait for it to finish.")
        cell = SlideCell.objects.select_related("final_class", "image").get(pk=cell.pk)
        before = {"class": cell.final_class.code if cell.final_class else None, "status": cell.status}
        cell_class = None
        if target == NOT_COUNTED:
            cell.status = SlideCell.Status.NOT_COUNTED
        elif target == COUNTED:
            cell.status = SlideCell.Status.COUNTED
        elif target == CONFIRM:
            cell_class = _confirmed_class(cell)
        elif not target:
            raise ValidationError({"target": "Choose a class for this cell (or 'not counted')."})
        else:
            cell_class = CellClass.objects.filter(code=target).first()
            if cell_class is None or not cell_class.active:
                raise ValidationError({"target": f"Unknown or inactive class {target!r}."})
            if cell_class.is_abstain:
                raise ValidationError({"target": "'Unidentified' is the model's abstention; choose a class."})
            cell.final_class = cell_class
            cell.status = SlideCell.Status.COUNTED
        after = {"class": cell.final_class.code if cell.final_class else None, "status": cell.status}
        confirms = after == before and cell_class is not None and cell.changed_by_id != getattr(actor, "pk", None)
        if after == before and not confirms:
            return cell
        cell.changed_by, cell.changed_at = actor, timezone.now()
        cell.save(update_fields=["final_class", "status", "changed_by", "changed_at"])
        label = _verification_label(cell=cell, actor=actor, cell_class=cell_class) if cell_class else None
        audit_record(actor=actor, action=AuditAction.SLIDE_CELL_VERIFY if confirms else "slide.cell_reclassify", target=cell,
                     before=dict(before, slide=slide.pk),
                     after=dict(after, predicted=cell.predicted_class, suggested=cell.top_class or None,
                                suggestion_referred=cell.referred, label=label.pk if label else None))
        status = Slide.Status.VERIFIED if _unresolved_count(slide) == 0 else Slide.Status.READY
        if slide.status != status:
            slide.status = status
            slide.save(update_fields=["status"])
    return cell


def _verification_label(*, cell: SlideCell, actor, cell_class: CellClass):
    """The verifier's label of the cell's image, with the suggestion the model made (its top
    class, recorded as a best guess where it referred the cell). None where a reviewer already
    adjudicated the image (that decision stays its final label), and None for a held-out image (a
    held-out cell uploaded again in a slide): its readings are the blind ones of the labelling
    portal, never a slide verification made with the slide on screen. The slide still counts the cell."""
    if cell.image.split == Split.HELDOUT:
        return None
    suggested = CellClass.objects.filter(code=cell.top_class).first() if cell.top_class else None
    try:
        return label_submit(image=cell.image, labeller=actor, cell_class=cell_class, suggested_class=suggested,
                            suggestion_model_version=cell.model_version, suggestion_referred=cell.referred)
    except LabelConflict:
        return None


def slide_cells_confirm(*, slide: Slide, actor, code: str) -> int:
    """Confirm, as they are, every counted cell of one class that no expert has verified yet
    (one decision per cell, each audited and labelled as :func:`slide_cell_reclassify` does),
    except those whose class the lab's blind rule hides from this expert (they wait with the
    unidentified cells for a class each). Returns how many were confirmed."""
    if CellClass.objects.filter(code=code, is_abstain=True).exists():
        raise ValidationError({"target": "Cells the model referred need a class each (its best guess is not a call "
                                         "to confirm); choose one per cell."})
    cells = list(slide.cells.filter(status=SlideCell.Status.COUNTED, final_class__code=code, changed_by__isnull=True)
                 .select_related("image").order_by("id"))
    hidden = slide_cells_blind(cells=cells, user=actor).final_class
    cells = [cell for cell in cells if cell.pk not in hidden]
    for cell in cells:
        slide_cell_reclassify(cell=cell, actor=actor, target=code)
    return len(cells)


def _clean_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if len(reason) > 500:
        raise ValidationError({"reason": "The reason is limited to 500 characters."})
    return reason


def _clean_comment(comment: str | None) -> str:
    comment = release.comment_normalise(comment)
    if len(comment) > release.MAX_COMMENT:
        raise ValidationError({"comment": f"The comment is limited to {release.MAX_COMMENT} characters."})
    return comment


def _sign_checks(slide: Slide, *, reason: str) -> tuple[dict, list[str]]:
    """The differential as it would be signed, and its warnings; refused while cells are unresolved,
    no leukocyte is counted, or warnings stand without a ``reason`` (the caller holds the lock)."""
    if slide.task_state != Slide.TaskState.DONE:
        raise SlideNotReady("The slide has not finished processing.")
    unresolved = _unresolved_count(slide)
    if unresolved:
        raise SlideNotReady(f"{unresolved} cell(s) are still unidentified: classify them or mark them not counted.")
    report = slide_differential(slide=slide, signing=True)
    if not report["leukocyte_total"]:
        raise SlideNotReady("No leukocyte is counted on this slide.")
    warnings = slide_sign_warnings(slide=slide, diff=report)
    if warnings and not reason:
        raise SignatureNeedsReason(warnings)
    return report, warnings


def _sign_freeze(slide: Slide, *, report: dict, warnings: list[str], actor, reason: str, comment: str,
                 release_record: dict | None = None) -> Slide:
    """Freeze the report (with the comment, and the two-step release when there is one) and sign."""
    now = timezone.now()
    report["signed_at"] = now.isoformat()
    report["signed_by"] = actor.get_username()
    report["sign_warnings"] = warnings
    report["sign_reason"] = reason
    report["method"] = slide_method_text(slide=slide)
    report["comment"] = comment
    if release_record is not None:
        report["release"] = dict(release_record, released_by=actor.get_username(), released_by_id=actor.pk,
                                 released_at=now.isoformat())
    slide.report = report
    slide.status = Slide.Status.SIGNED
    slide.signed_by, slide.signed_at = actor, now
    slide.sign_reason = reason
    slide.comment = comment
    slide.save(update_fields=["report", "status", "signed_by", "signed_at", "sign_reason", "comment"])
    audit_record(actor=actor, action=AuditAction.SLIDE_RELEASE if release_record else AuditAction.SLIDE_SIGN,
                 target=slide,
                 after={"counts": report["counts"], "leukocytes": report["leukocyte_total"], "version": slide.version,
                        "warnings": warnings, "reason": reason, "comment": comment,
                        **({"release": report["release"]} if release_record else {})})
    _results_outbox(slide)
    return slide


def _results_outbox(slide: Slide) -> None:
    """The signed report goes to the LIS outbox in the signature's transaction (lis.outbox; a task
    delivers it). A corrected version first withdraws the version it replaces, then follows it, so
    that a correction never overtakes, nor leaves standing, its original."""
    previous = slide.previous
    if previous is not None and previous.is_signed:
        render_hl7, render_fhir = exports.lis_renderers(previous, superseded=True, successor_version=slide.version)
        lis_outbox.results_outbox_add(slide_id=previous.pk, accession=previous.code, version=previous.version,
                                      event="withdrawn", render_hl7=render_hl7, render_fhir=render_fhir)
    render_hl7, render_fhir = exports.lis_renderers(slide)
    lis_outbox.results_outbox_add(slide_id=slide.pk, accession=slide.code, version=slide.version,
                                  event="corrected" if slide.version > 1 else "final",
                                  render_hl7=render_hl7, render_fhir=render_fhir)


def _check_signable(slide: Slide) -> None:
    if slide.status == Slide.Status.SIGNED:
        raise SlideLocked(f"Slide {slide} is already signed.")
    if slide.status == Slide.Status.AWAITING_RELEASE:
        raise SlideLocked(f"Slide {slide} is submitted and awaits release by a second reviewer.")


def slide_sign(*, slide: Slide, actor, reason: str = "", comment: str = "") -> Slide:
    """Freeze the differential and sign. Every counted cell must have a class; while warnings
    stand (``selectors.slide_sign_warnings``: fewer cells than the target, ...) the signature
    needs a written ``reason``, which is audited and printed on every report format, as is the
    reviewer's interpretive ``comment`` (optional). With the lab's two-step release on, a slide is
    submitted (:func:`slide_submit`) and released (:func:`slide_release`) instead."""
    reason, comment = _clean_reason(reason), _clean_comment(comment)
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        _check_signable(slide)
        if LabSettings.get().two_step_release:
            raise SlideNotReady("Two-step release is on: submit the slide for release; a second reviewer releases it.")
        report, warnings = _sign_checks(slide, reason=reason)
        return _sign_freeze(slide, report=report, warnings=warnings, actor=actor, reason=reason, comment=comment)


# --- Two-step release ------------------------------------------------------------------------
class SameUserRelease(SlideLocked):
    """The user who submitted a slide cannot release it."""


def slide_submit(*, slide: Slide, actor, reason: str = "", comment: str = "") -> Slide:
    """Two-step release, step one: the technologist who verified the slide submits it, with the same
    checks as signing (a reason while warnings stand) and, optionally, a draft comment. The slide is
    then awaiting release: not signed (no report, no export), locked against changes."""
    if not has_role(actor, REVIEWER):
        raise PermissionDenied("Submitting a slide needs the reviewer role (the role that verifies its cells).")
    reason, comment = _clean_reason(reason), _clean_comment(comment)
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        _check_signable(slide)
        if not LabSettings.get().two_step_release:
            raise SlideNotReady("Two-step release is off in the lab settings: sign the slide instead.")
        _, warnings = _sign_checks(slide, reason=reason)
        slide.status = Slide.Status.AWAITING_RELEASE
        slide.submitted_by, slide.submitted_at = actor, timezone.now()
        slide.sign_reason, slide.comment = reason, comment
        slide.save(update_fields=["status", "submitted_by", "submitted_at", "sign_reason", "comment"])
        audit_record(actor=actor, action=AuditAction.SLIDE_SUBMIT, target=slide,
                     after={"version": slide.version, "warnings": warnings, "reason": reason, "comment": comment})
    return slide


def slide_release(*, slide: Slide, actor, comment: str | None = None) -> Slide:
    """Two-step release, step two: a reviewer other than the submitter releases (signs) a submitted
    slide; the report records both. ``comment`` None keeps the submitted comment, else replaces it."""
    if not has_role(actor, REVIEWER):
        raise PermissionDenied("Releasing a slide needs the reviewer role.")
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        if slide.status != Slide.Status.AWAITING_RELEASE:
            raise SlideLocked(f"Slide {slide} is not awaiting release"
                              + (" (it is signed)." if slide.is_signed else ": it must be submitted first."))
        if slide.submitted_by_id == actor.pk:
            raise SameUserRelease(f"You submitted slide {slide}: a second reviewer must release it.")
        comment = slide.comment if comment is None else _clean_comment(comment)
        report, warnings = _sign_checks(slide, reason=slide.sign_reason)
        record = {"two_step": True, "submitted_by": slide.submitted_by.get_username(),
                  "submitted_by_id": slide.submitted_by_id, "submitted_at": slide.submitted_at.isoformat()}
        return _sign_freeze(slide, report=report, warnings=warnings, actor=actor, reason=slide.sign_reason,
                            comment=comment, release_record=record)


def slide_release_return(*, slide: Slide, actor, reason: str) -> Slide:
    """A submitted slide goes back to verification (the releaser found something to change, or the
    submitter withdraws it): submitted, not signed; audited with the reason."""
    reason = (reason or "").strip()
    if not reason or len(reason) > 500:
        raise ValidationError({"reason": "Say why the slide goes back to verification (at most 500 characters)."})
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        if slide.status != Slide.Status.AWAITING_RELEASE:
            raise SlideLocked(f"Slide {slide} is not awaiting release.")
        before = {"submitted_by": slide.submitted_by_id, "submitted_at": slide.submitted_at.isoformat()}
        slide.status = Slide.Status.VERIFIED if _unresolved_count(slide) == 0 else Slide.Status.READY
        slide.submitted_by, slide.submitted_at = None, None
        slide.save(update_fields=["status", "submitted_by", "submitted_at"])
        audit_record(actor=actor, action=AuditAction.SLIDE_RELEASE_RETURN, target=slide, before=before,
                     after={"reason": reason})
    return slide


def slide_correct(*, slide: Slide, actor, reason: str) -> Slide:
    """A signed slide is read-only: a correction makes a new version (a copy of its cells)
    that can be verified and signed again. Both are audited."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the signed report is corrected."})
    with transaction.atomic():
        slide = Slide.objects.select_for_update().get(pk=slide.pk)
        if slide.status != Slide.Status.SIGNED:
            raise SlideLocked("Only a signed slide is corrected by a new version; this one can still be edited.")
        if Slide.objects.filter(previous=slide).exists():
            raise SlideLocked(f"Slide {slide} already has a newer version.")
        new = Slide.objects.create(
            code=slide.code, version=slide.version + 1, previous=slide, kind=slide.kind, wbc_count=slide.wbc_count,
            notes=slide.notes, target_count=slide.target_count, status=Slide.Status.READY,
            microns_per_pixel=slide.microns_per_pixel, acquisition_source=slide.acquisition_source,
            task_state=Slide.TaskState.DONE, progress=dict(slide.progress or {}, stage="done"),
            model_version=slide.model_version, created_by=actor, correction_reason=reason[:500],
        )
        field_map = {}
        for f in slide.fields.all():
            field_map[f.pk] = SlideField.objects.create(slide=new, image=f.image, position=f.position,
                                                        detected=f.detected, n_cells=f.n_cells, scale=f.scale,
                                                        **platelet_services.field_copy_values(f))
        red_cell_grades_copy(source=slide, target=new)
        SlideCell.objects.bulk_create([
            SlideCell(
                slide=new, field=field_map.get(c.field_id), x0=c.x0, y0=c.y0, x1=c.x1, y1=c.y1,
                detector_kind=c.detector_kind, detector_score=c.detector_score, image=c.image,
                predicted_class=c.predicted_class, top_class=c.top_class, confidence=c.confidence,
                agreement=c.agreement, n_backbones=c.n_backbones, model_version=c.model_version,
                reasons=c.reasons, ood_score=c.ood_score,
                final_class=c.final_class, status=c.status, changed_by=c.changed_by, changed_at=c.changed_at,
            )
            for c in slide.cells.all()
        ])
        new.status = Slide.Status.VERIFIED if _unresolved_count(new) == 0 else Slide.Status.READY
        new.save(update_fields=["status"])
        audit_record(actor=actor, action=AuditAction.SLIDE_CORRECT, target=slide, after={"new_version": new.pk, "reason": reason[:500]})
        audit_record(actor=actor, action=AuditAction.SLIDE_CREATE_VERSION, target=new,
                     before={"previous": slide.pk, "version": slide.version}, after={"version": new.version})
    return new


# --- Reference intervals -------------------------------------------------------------------
def reference_interval_save(*, actor, interval: ReferenceInterval | None = None, **fields) -> ReferenceInterval:
    """Create or change a reference interval (lab admins). Audited."""
    codes = [c.strip() for c in str(fields.get("codes", "")).split("+") if c.strip()]
    if not codes:
        raise ValidationError({"codes": "Give at least one class code (join several with '+')."})
    known = set(CellClass.objects.values_list("code", flat=True))
    if fields.get("measure") == ReferenceInterval.Measure.PLATELETS:  # the platelet estimate (slides.platelets)
        known = {"platelets"}
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise ValidationError({"codes": f"Unknown class code(s): {', '.join(unknown)}."})
    low, high = fields.get("low"), fields.get("high")
    if low is not None and high is not None and low > high:
        raise ValidationError({"low": "The lower limit is above the upper limit."})
    if fields.get("measure") not in ReferenceInterval.Measure.values:
        raise ValidationError({"measure": "Unknown measure."})
    with transaction.atomic():
        before = None
        if interval is None:
            interval = ReferenceInterval()
        else:
            interval = ReferenceInterval.objects.select_for_update().get(pk=interval.pk)
            before = {k: getattr(interval, k) for k in ("name", "codes", "measure", "low", "high", "active")}
        for key, value in fields.items():
            setattr(interval, key, value)
        interval.codes = "+".join(codes)
        interval.full_clean()
        interval.save()
        audit_record(actor=actor, action=AuditAction.SLIDE_REFERENCE_INTERVAL, target=interval, before=before,
                     after={k: getattr(interval, k) for k in ("name", "codes", "measure", "low", "high", "active")})
    return interval
