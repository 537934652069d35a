"""Writes for images, labels, adjudication, taxonomy and the audit trail."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from classifier.enqueue import classification_enqueue_on_commit
from classifier.ml.io import atomic_write
from leukoportal.roles import LAB_ADMIN, has_role
from classifier.models import ModelVersion, Prediction
from sources.models import Source as AcquisitionSource
from sources.selectors import source_resolve

from .archives import IMAGE_EXTENSIONS, ArchiveRejected, open_zip, zip_members
from .audit import audit_record
from .deid import deidentified_code_problem
from .folders import class_folders
from .imaging import MIN_IMAGE_SIDE, ImageRejected, sanitize_image
from .models import (
    Adjudication,
    AuditAction,
    CellClass,
    CellImage,
    Label,
    LabSettings,
    Source,
    Split,
    UploadBatch,
)
from .selectors import model_call_text

log = logging.getLogger(__name__)


# --- Upload --------------------------------------------------------------------------------
@dataclass
class UploadOutcome:
    image: CellImage
    created: bool


@dataclass
class BatchSummary:
    batch_id: int | None = None
    stored: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "batch": self.batch_id,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "counts": {"stored": len(self.stored), "duplicates": len(self.duplicates), "refused": len(self.refused)},
        }


def _check_split(split: str) -> str:
    if split not in Split.values:
        raise ValidationError({"split": f"Unknown split {split!r}; use one of {', '.join(Split.values)}."})
    return split


#: The answer to a labeller who asks to upload to the held-out set.
HELDOUT_UPLOAD_REFUSED = "Only a lab admin can upload to the held-out set."


def upload_split_allowed(*, user, split: str) -> bool:
    """Who may upload to which split: anyone who uploads, to training; only a lab admin, to the
    held-out set (the cells that judge the models)."""
    return split == Split.TRAIN or has_role(user, LAB_ADMIN)


def upload_split_check(*, user, split: str) -> None:
    """Refuse (PermissionDenied) an upload to a split this user may not upload to; the browser, the API
    and the batch services below all ask here."""
    if not upload_split_allowed(user=user, split=split):
        raise PermissionDenied(HELDOUT_UPLOAD_REFUSED)


def _check_sample_code(sample_code: str) -> str:
    sample_code = (sample_code or "").strip()
    if sample_code:
        problem = deidentified_code_problem(sample_code)
        if problem:
            raise ValidationError({"sample_code": problem})
    return sample_code


def batch_create(*, user, channel: str, split: str = Split.TRAIN, sample_code: str = "") -> UploadBatch:
    return UploadBatch.objects.create(
        created_by=user, channel=channel, split=_check_split(split), sample_code=_check_sample_code(sample_code)
    )


def _storage_name(sha256: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.png"


def image_upload(
    *,
    data: bytes,
    uploaded_by,
    split: str = Split.TRAIN,
    source: str = Source.CELL,
    batch: UploadBatch | None = None,
    sample_code: str = "",
    enqueue_classification: bool = True,
    min_side: int = MIN_IMAGE_SIDE,
    acquisition_source: AcquisitionSource | None = None,
) -> UploadOutcome:
    """Store one image de-identified. Raises ImageRejected (bad file) or ValidationError (bad field).

    The original file name is never passed here, so it cannot be stored. ``min_side``: every upload
    keeps the default (an image too small to be a cell is refused); only the slide pipeline's own
    crops pass less (a cell it counted, clipped at the field's border, must not vanish from the count).
    ``acquisition_source``: the microscope/camera it comes from, resolved by the caller
    (``sources.selectors.source_resolve``); None: the lab's default source. An image stored before
    keeps the source it was stored with.
    """
    _check_split(split)
    sample_code = _check_sample_code(sample_code)
    clean = sanitize_image(data, max_pixels=settings.UPLOAD_MAX_PIXELS, max_bytes=settings.UPLOAD_MAX_BYTES,
                           min_side=min_side)

    existing = CellImage.objects.filter(sha256=clean.sha256).first()
    if existing:
        return UploadOutcome(existing, False)

    name = _storage_name(clean.sha256)
    wrote_file = False
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(clean.png_bytes))
        wrote_file = True
        if saved != name:  # another upload of the same pixels wrote it a moment ago
            default_storage.delete(saved)
            wrote_file = False
    try:
        with transaction.atomic():
            image = CellImage.objects.create(
                sha256=clean.sha256,
                file=name,
                width=clean.width,
                height=clean.height,
                original_format=clean.original_format,
                source=source,
                split=split,
                sample_code=sample_code,
                batch=batch,
                uploaded_by=uploaded_by,
                **({"acquisition_source": acquisition_source} if acquisition_source is not None else {}),
            )
            audit_record(
                actor=uploaded_by,
                action=AuditAction.IMAGE_UPLOAD,
                target=image,
                after={"sha256": image.sha256, "split": split, "source": source, "batch": batch.pk if batch else None,
                       "acquisition_source": image.acquisition_source_id},
            )
    except IntegrityError:
        existing = CellImage.objects.filter(sha256=clean.sha256).first()
        if existing is None:
            if wrote_file:
                default_storage.delete(name)
            raise
        return UploadOutcome(existing, False)
    except BaseException:
        if wrote_file and not CellImage.objects.filter(sha256=clean.sha256).exists():
            default_storage.delete(name)
        raise

    if enqueue_classification and source == Source.CELL:
        classification_enqueue_on_commit(image_ids=[image.pk])
    return UploadOutcome(image, True)


_SPLIT_WORDS = {Split.TRAIN: "training", Split.HELDOUT: "held-out"}


def duplicate_message(*, image: CellImage, split: str) -> str:
    """How the upload page, the API and ``import_cells`` word an upload of pixels already stored as
    ``image``, asked for ``split``: an upload never moves a stored image to another split (a training
    cell does not become held-out by being uploaded again, nor the reverse), so say where it stays."""
    if image.split == split:
        return f"duplicate of image {image.pk}, already in the {_SPLIT_WORDS[image.split]} split"
    return (f"duplicate of image {image.pk}: it stays in the {_SPLIT_WORDS[image.split]} split, not added to "
            f"the {_SPLIT_WORDS[split]} set (a lab admin moves an image between splits on its page)")


def _record_outcome(summary: BatchSummary, name: str, outcome: UploadOutcome, *, split: str) -> None:
    entry = {"name": name, "id": outcome.image.pk, "sha256": outcome.image.sha256}
    if not outcome.created:
        entry.update(split=outcome.image.split, message=duplicate_message(image=outcome.image, split=split))
    (summary.stored if outcome.created else summary.duplicates).append(entry)


def files_upload(
    *, files: Iterable[tuple[str, bytes]], uploaded_by, channel: str, split: str = Split.TRAIN, sample_code: str = "",
    acquisition_source=None,
) -> BatchSummary:
    """Store many images as one batch; each bad file is refused with its reason, the rest stored.
    ``acquisition_source``: a source, its id or name (``source_resolve``); none: the lab's default."""
    upload_split_check(user=uploaded_by, split=split)
    acquisition_source = source_resolve(value=acquisition_source)
    batch = batch_create(user=uploaded_by, channel=channel, split=split, sample_code=sample_code)
    summary = BatchSummary(batch_id=batch.pk)
    for name, data in files:
        try:
            outcome = image_upload(
                data=data, uploaded_by=uploaded_by, split=split, batch=batch, sample_code=batch.sample_code,
                acquisition_source=acquisition_source,
            )
        except ImageRejected as exc:
            summary.refused.append({"name": name, "reason": exc.message, "code": exc.code})
            continue
        _record_outcome(summary, name, outcome, split=split)
    _batch_close(batch, summary)
    return summary


def zip_upload(
    *, fileobj: BinaryIO, uploaded_by, channel: str, split: str = Split.TRAIN, sample_code: str = "",
    acquisition_source=None,
) -> BatchSummary:
    """Store the images of a zip archive. A dangerous archive is refused whole (ArchiveRejected)
    before anything is stored, the batch included; after that, a bad member is refused alone."""
    _check_split(split)
    upload_split_check(user=uploaded_by, split=split)
    sample_code = _check_sample_code(sample_code)
    acquisition_source = source_resolve(value=acquisition_source)
    try:
        archive = open_zip(
            fileobj,
            max_entries=settings.ZIP_MAX_ENTRIES,
            max_uncompressed=settings.ZIP_MAX_UNCOMPRESSED,
            max_ratio=settings.ZIP_MAX_RATIO,
            max_member_bytes=settings.UPLOAD_MAX_BYTES,
        )
    except ArchiveRejected as exc:
        # nothing was stored; the attempt stays on the record, by its code alone: the message names
        # the archive's entries, and a file name may name a patient
        audit_record(actor=uploaded_by, action=AuditAction.ARCHIVE_REFUSED, target=("Upload", "zip"),
                     after={"channel": channel, "code": exc.code})
        raise
    with archive as zf:
        batch = batch_create(user=uploaded_by, channel=channel, split=split, sample_code=sample_code)
        summary = BatchSummary(batch_id=batch.pk)
        for member in zip_members(zf, max_member_bytes=settings.UPLOAD_MAX_BYTES):
            if member.refused:
                summary.refused.append({"name": member.name, "reason": member.refused, "code": "member"})
                continue
            try:
                outcome = image_upload(
                    data=member.data, uploaded_by=uploaded_by, split=split, batch=batch, sample_code=batch.sample_code,
                    acquisition_source=acquisition_source,
                )
            except ImageRejected as exc:
                summary.refused.append({"name": member.name, "reason": exc.message, "code": exc.code})
                continue
            _record_outcome(summary, member.name, outcome, split=split)
    _batch_close(batch, summary)
    return summary


def uploads_store(*, files: Iterable, uploaded_by, channel: str, split: str = Split.TRAIN,
                  sample_code: str = "", acquisition_source=None) -> dict:
    """The browser's upload of many files at once: each zip archive (by its name) is stored as a batch
    of its own, the other images together as one batch. An archive refused whole is listed under
    ``refused`` with its reason, nothing of it stored; the others go on. ``files``: objects with
    ``name`` and ``read()`` (uploaded files). Returns the batches' results merged, with counts."""
    upload_split_check(user=uploaded_by, split=split)
    acquisition_source = source_resolve(value=acquisition_source)
    results = {"stored": [], "duplicates": [], "refused": [], "batches": []}

    def merge(summary: BatchSummary) -> None:
        data = summary.as_dict()
        for key in ("stored", "duplicates", "refused"):
            results[key].extend(data[key])
        results["batches"].append(data["batch"])

    plain = []
    for f in files:
        if f.name.lower().endswith(".zip"):
            try:
                merge(zip_upload(fileobj=f, uploaded_by=uploaded_by, channel=channel, split=split,
                                 sample_code=sample_code, acquisition_source=acquisition_source))
            except ArchiveRejected as exc:
                results["refused"].append({"name": f.name, "reason": exc.message, "code": exc.code})
        else:
            plain.append((f.name, f.read()))
    if plain:
        merge(files_upload(files=plain, uploaded_by=uploaded_by, channel=channel, split=split, sample_code=sample_code,
                           acquisition_source=acquisition_source))
    results["counts"] = {k: len(results[k]) for k in ("stored", "duplicates", "refused")}
    return results


def _batch_close(batch: UploadBatch, summary: BatchSummary) -> None:
    batch.stored = len(summary.stored)
    batch.duplicates = len(summary.duplicates)
    batch.refused = len(summary.refused)
    batch.save(update_fields=["stored", "duplicates", "refused"])
    audit_record(
        actor=batch.created_by,
        action=AuditAction.BATCH_UPLOAD,
        target=batch,
        after={"stored": batch.stored, "duplicates": batch.duplicates, "refused": batch.refused, "split": batch.split},
    )


def image_split_move(*, image: CellImage, actor, split: str) -> CellImage:
    _check_split(split)
    with transaction.atomic():
        image = CellImage.objects.select_for_update().get(pk=image.pk)
        if image.split == split:
            return image
        before = image.split
        image.split = split
        image.save(update_fields=["split"])
        audit_record(actor=actor, action=AuditAction.IMAGE_SPLIT_MOVE, target=image, before={"split": before}, after={"split": split})
        _final_label_recompute(image)
    return image


# --- Labels --------------------------------------------------------------------------------
class LabelConflict(Exception):
    """Someone else changed the cell first; the message says what happened."""


def _final_label_recompute(image: CellImage) -> None:
    """The cell's final label and whether it needs review, by the lab's rule
    (:meth:`LabSettings.final_label_decide`), from its current readings and adjudication."""
    adjudication = image.adjudications.select_related("cell_class").order_by("-id").first()
    current = list(image.labels.filter(superseded_at__isnull=True).select_related("cell_class"))
    final, needs_review = LabSettings.get().final_label_decide(
        split=image.split, source=image.source, readings=[(label.cell_class, label.unsure) for label in current],
        adjudicated=adjudication.cell_class if adjudication else None)
    if image.current_label_count != len(current):
        image.current_label_count = len(current)
        image.save(update_fields=["current_label_count"])
    if final != image.final_label or needs_review != image.needs_review:
        before = {"final_label": image.final_label.code if image.final_label else None, "needs_review": image.needs_review}
        image.final_label = final
        image.final_label_at = timezone.now() if final else None
        image.needs_review = needs_review
        image.save(update_fields=["final_label", "final_label_at", "needs_review"])
        audit_record(
            actor=None,
            action=AuditAction.IMAGE_FINAL_LABEL,
            target=image,
            before=before,
            after={"final_label": final.code if final else None, "needs_review": needs_review},
        )


def label_submit(
    *,
    image: CellImage,
    labeller,
    cell_class: CellClass,
    unsure: bool = False,
    suggested_class: CellClass | None = None,
    suggestion_model_version=None,
    suggestion_referred: bool = False,
) -> Label:
    """Record one expert's label. A previous label by the same expert is superseded, never deleted.

    ``suggested_class``: what the model offered the expert; with ``suggestion_referred`` it was the
    best guess on a cell the model referred, not a call it accepted (so the expert classified the
    cell, and no screen says they "confirmed the model's" class)."""
    if not cell_class.active:
        raise ValidationError({"cell_class": f"The class {cell_class.code!r} is no longer active."})
    if cell_class.is_abstain:
        raise ValidationError({"cell_class": "'Unidentified' is the model's abstention, not an expert label; use 'not sure'."})
    if LabSettings.hides_final_label(image=image, user=labeller):
        raise LabelConflict("This cell is in a proficiency test open for you: answer it in the test.")
    with transaction.atomic():
        image = CellImage.objects.select_for_update().get(pk=image.pk)
        if image.adjudications.exists():
            raise LabelConflict("A reviewer has already adjudicated this cell; its label is final.")
        previous = image.labels.filter(labeller=labeller, superseded_at__isnull=True).first()
        if previous and previous.cell_class_id == cell_class.pk and previous.unsure == unsure:
            return previous
        if previous:
            previous.superseded_at = timezone.now()
            previous.save(update_fields=["superseded_at"])
        label = Label.objects.create(
            image=image,
            labeller=labeller,
            cell_class=cell_class,
            unsure=unsure,
            suggested_class=suggested_class,
            suggestion_model_version=suggestion_model_version,
            suggestion_referred=bool(suggested_class and suggestion_referred),
        )
        audit_record(
            actor=labeller,
            action=AuditAction.LABEL_CHANGE if previous else AuditAction.LABEL_CREATE,
            target=image,
            before={"class": previous.cell_class.code, "unsure": previous.unsure} if previous else None,
            after={
                "class": cell_class.code,
                "unsure": unsure,
                "suggested": suggested_class.code if suggested_class else None,
                "suggestion_referred": bool(suggested_class and suggestion_referred),
                "model_version": getattr(suggestion_model_version, "pk", None),
            },
        )
        _final_label_recompute(image)
    return label


def adjudication_submit(*, image: CellImage, reviewer, cell_class: CellClass | None, note: str = "") -> Adjudication:
    """A reviewer's final decision. Two reviewers at once: the first wins, the second is told.
    An empty class is refused: a decision is never a default."""
    if cell_class is None:
        raise ValidationError({"cell_class": "Nothing decided: choose the final class."})
    if not cell_class.active or cell_class.is_abstain:
        raise ValidationError({"cell_class": f"{cell_class.code!r} cannot be a final label."})
    with transaction.atomic():
        image = CellImage.objects.select_for_update().get(pk=image.pk)
        previous = image.adjudications.order_by("-id").first()
        if previous is not None:
            raise LabelConflict(
                f"Already adjudicated as {previous.cell_class.name} by {previous.reviewer.get_username()}."
            )
        if not image.needs_review:
            raise LabelConflict("This cell is not waiting for adjudication.")
        adjudication = Adjudication.objects.create(image=image, reviewer=reviewer, cell_class=cell_class, note=note[:500])
        audit_record(
            actor=reviewer,
            action=AuditAction.LABEL_ADJUDICATE,
            target=image,
            before={"labels": [[lb.labeller.get_username(), lb.cell_class.code, lb.unsure] for lb in image.labels.filter(superseded_at__isnull=True)]},
            after={"class": cell_class.code, "note": note[:500]},
        )
        _final_label_recompute(image)
    return adjudication


# --- Taxonomy ------------------------------------------------------------------------------
def cell_class_save(*, actor, code: str, name: str, hotkey: str = "", display_order: int = 100,
                    active: bool = True, is_leukocyte: bool = True) -> CellClass:
    """Create a class or rename/reorder/(de)activate an existing one. Past labels keep pointing at it."""
    with transaction.atomic():
        obj = CellClass.objects.select_for_update().filter(code=code).first()
        before = None
        if obj is None:
            obj = CellClass(code=code)
        else:
            before = {"name": obj.name, "hotkey": obj.hotkey, "active": obj.active, "display_order": obj.display_order}
        if hotkey and CellClass.objects.filter(hotkey=hotkey, active=True).exclude(code=code).exists():
            raise ValidationError({"hotkey": f"The key {hotkey!r} is already used by another active class."})
        obj.name, obj.hotkey, obj.display_order, obj.active, obj.is_leukocyte = name, hotkey, display_order, active, is_leukocyte
        obj.full_clean()
        obj.save()
        audit_record(actor=actor, action=AuditAction.TAXONOMY_SAVE, target=obj, before=before,
                     after={"name": name, "hotkey": hotkey, "active": active, "display_order": display_order})
    return obj


# --- Bulk import of an ImageFolder tree ----------------------------------------------------
IMPORT_USERNAME = "import"


def import_user():
    """The account that owns imports made without --labelled-by; it cannot log in."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user, created = User.objects.get_or_create(username=IMPORT_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    labels_created: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    other_split: list[tuple[str, str]] = field(default_factory=list)  # duplicates that stay in their split


#: At most this many of a refused import's problems are kept in its audit event.
IMPORT_PROBLEMS_AUDITED = 50


def import_refusal_record(*, actor, kind: str, channel: str, problems: list[str], **details) -> None:
    """Audit a refused import (``kind``: an export, or an ImageFolder tree) with its first problems.
    Called after the refused work was rolled back, outside its transaction, so that the record stays."""
    audit_record(actor=actor, action=AuditAction.CELLS_IMPORT_REFUSED, target=("Import", kind), after={
        "channel": channel, **details, "problems": len(problems),
        "first_problems": problems[:IMPORT_PROBLEMS_AUDITED]})


def cells_import_tree(*, root, split: str, labelled_by, progress=None, acquisition_source=None) -> ImportSummary:
    """Import an ImageFolder tree (folder name = class code). Unknown folders: nothing is imported.
    ``acquisition_source``: a source, its id or name; none: the lab's default.
    Every attempt is audited: a refused one (``cells.import_refused``), and one that changed nothing
    (``batch.import`` of no batch) as well as one that stored cells or labels."""
    try:
        _check_split(split)
        acquisition_source = source_resolve(value=acquisition_source)
        folders = class_folders(root)
    except ValidationError as exc:
        import_refusal_record(actor=labelled_by, kind="folder", channel="cli", problems=list(exc.messages),
                              split=split)
        raise
    classes = {c.code: c for c in CellClass.objects.filter(code__in=[p.name for p in folders])}
    files = [
        (folder.name, path)
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    ]
    summary = ImportSummary()
    batch = batch_create(user=labelled_by, channel="cli", split=split)
    for i, (code, path) in enumerate(files):
        if progress:
            progress(i, len(files))
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            summary.refused.append((str(path), "not an image file"))
            continue
        try:
            outcome = image_upload(data=path.read_bytes(), uploaded_by=labelled_by, split=split, batch=batch,
                                   acquisition_source=acquisition_source)
        except ImageRejected as exc:
            summary.refused.append((str(path), exc.message))
            continue
        if outcome.created:
            summary.stored += 1
        else:
            summary.duplicates += 1
            if outcome.image.split != split:
                summary.other_split.append((str(path), duplicate_message(image=outcome.image, split=split)))
        image = outcome.image
        has_same = image.labels.filter(labeller=labelled_by, superseded_at__isnull=True, cell_class=classes[code]).exists()
        if not has_same and not image.adjudications.exists():
            label_submit(image=image, labeller=labelled_by, cell_class=classes[code])
            summary.labels_created += 1
    if progress:
        progress(len(files), len(files))
    batch.stored, batch.duplicates, batch.refused = summary.stored, summary.duplicates, len(summary.refused)
    after = {"stored": summary.stored, "duplicates": summary.duplicates, "labels": summary.labels_created,
             "refused": len(summary.refused), "other_split": len(summary.other_split), "split": split}
    if summary.stored == 0 and summary.labels_created == 0 and not summary.refused:
        batch.delete()  # a re-import that changed nothing leaves no batch behind, only its audit event
        audit_record(actor=labelled_by, action=AuditAction.BATCH_IMPORT, target=("Import", "folder"),
                     after={**after, "changed": False})
    else:
        batch.save(update_fields=["stored", "duplicates", "refused"])
        audit_record(actor=labelled_by, action=AuditAction.BATCH_IMPORT, target=batch, after={**after, "changed": True})
        planner_statistics_refresh()
    return summary


def planner_statistics_refresh() -> None:
    """After a bulk import, refresh PostgreSQL's statistics of the cell and label tables.
    Until autovacuum does it, the planner would take the new rows for none and plan the
    labelling queues as nested loops: 80-90 ms per queue count instead of about 1 ms."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {CellImage._meta.db_table}, {Label._meta.db_table}")


# --- Labelling portal ----------------------------------------------------------------------
@dataclass(frozen=True)
class OfferedSuggestion:
    """What the portal offered an expert on a cell: the model's call, or where the model referred
    the cell (``referred``), its best guess with the reason in words. ``cell_class`` None: nothing."""

    cell_class: CellClass | None = None
    model_version: ModelVersion | None = None
    referred: bool = False
    reason: str = ""
    confidence: float | None = None


def label_suggestion_resolve(*, image: CellImage, labeller, model_version_id: int | None = None) -> OfferedSuggestion:
    """The model suggestion the portal offers this expert on this cell (empty where there is none).

    Nothing is offered where the lab's blind rule hides the model's call from this reader
    (held-out cells read blind). A client may name the version whose suggestion it showed; that
    version must have a prediction for the cell.
    """
    if LabSettings.get().hides_model_call(image=image, user=labeller):
        return OfferedSuggestion()
    predictions = Prediction.objects.filter(image=image).select_related("model_version")
    if model_version_id is not None:
        prediction = predictions.filter(model_version_id=model_version_id).first()
        if prediction is None:
            raise ValidationError({"model_version": f"Model version {model_version_id} made no prediction for this cell."})
    else:
        prediction = predictions.filter(model_version__status=ModelVersion.Status.ACTIVE).first()
    if prediction is None:
        return OfferedSuggestion()
    code = prediction.top_class if prediction.abstained else prediction.label
    suggested = CellClass.objects.filter(code=code).first()
    if suggested is None:
        return OfferedSuggestion()
    return OfferedSuggestion(cell_class=suggested, model_version=prediction.model_version,
                             referred=prediction.abstained, reason=prediction.reason,
                             confidence=prediction.confidence)


def label_submit_as_offered(
    *, image: CellImage, labeller, cell_class: CellClass, unsure: bool = False, model_version_id: int | None = None
) -> Label:
    """Record a label together with the suggestion the portal offered (so 'confirmed or changed' is known)."""
    offered = label_suggestion_resolve(image=image, labeller=labeller, model_version_id=model_version_id)
    return label_submit(
        image=image, labeller=labeller, cell_class=cell_class, unsure=unsure,
        suggested_class=offered.cell_class, suggestion_model_version=offered.model_version,
        suggestion_referred=offered.referred,
    )


def referred_cell_message(*, reason: str, best_guess: str, confidence: float | None) -> str:
    """Why "confirm the model's call" is refused on a cell the model referred: one wording for the
    labelling grid and the slide verification screen."""
    guess = model_call_text(name=best_guess, confidence=confidence, abstained=False)
    why = f" ({reason})" if reason else ""
    return (f"The model referred this cell{why}: its best guess, {guess}, is not a call to confirm. "
            f"Choose the class yourself (its key or the list).")


def label_confirm_model_call(
    *, image: CellImage, labeller, unsure: bool = False, model_version_id: int | None = None
) -> Label:
    """The expert confirms the class the model accepted for this cell (the grid's Enter). Refused
    where the model referred the cell, or offered this reader nothing: an explicit class is needed."""
    offered = label_suggestion_resolve(image=image, labeller=labeller, model_version_id=model_version_id)
    if offered.cell_class is None:
        raise ValidationError({"confirm_model_call": "The model offers no call on this cell: choose a class."})
    if offered.referred:
        raise ValidationError({"confirm_model_call": referred_cell_message(
            reason=offered.reason, best_guess=offered.cell_class.name, confidence=offered.confidence)})
    return label_submit(image=image, labeller=labeller, cell_class=offered.cell_class, unsure=unsure,
                        suggested_class=offered.cell_class, suggestion_model_version=offered.model_version)


@dataclass
class ManyLabelsOutcome:
    labelled: list[Label] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)


def labels_submit_many(
    *, image_ids: list[int], labeller, cell_class: CellClass, unsure: bool = False
) -> ManyLabelsOutcome:
    """One class for many cells at once; each cell is its own transaction, a refused one is reported."""
    outcome = ManyLabelsOutcome()
    images = CellImage.objects.in_bulk(image_ids)
    for pk in dict.fromkeys(image_ids):
        image = images.get(pk)
        if image is None:
            outcome.refused.append({"image": pk, "reason": "No such cell."})
            continue
        try:
            outcome.labelled.append(
                label_submit_as_offered(image=image, labeller=labeller, cell_class=cell_class, unsure=unsure)
            )
        except LabelConflict as exc:
            outcome.refused.append({"image": pk, "reason": str(exc)})
    return outcome


def label_withdraw(*, image: CellImage, labeller) -> Label | None:
    """Undo: the expert's current label is superseded without a replacement (the row is kept)."""
    with transaction.atomic():
        image = CellImage.objects.select_for_update().get(pk=image.pk)
        if image.adjudications.exists():
            raise LabelConflict("A reviewer has already adjudicated this cell; its label is final.")
        current = image.labels.filter(labeller=labeller, superseded_at__isnull=True).select_related("cell_class").first()
        if current is None:
            return None
        current.superseded_at = timezone.now()
        current.save(update_fields=["superseded_at"])
        audit_record(
            actor=labeller, action=AuditAction.LABEL_WITHDRAW, target=image,
            before={"class": current.cell_class.code, "unsure": current.unsure}, after=None,
        )
        _final_label_recompute(image)
    return current


def lab_settings_change(*, actor, action: AuditAction,
                        after: Callable[[LabSettings], dict]) -> tuple[LabSettings, bool]:
    """Set fields of the lab's settings: ``after`` gives their new values from the row, read under a
    lock; the change is audited (``action``, the fields before and after). Nothing is written when
    nothing changes (a date is audited as its ISO text). The settings, and whether they changed."""
    with transaction.atomic():
        lab = LabSettings.objects.select_for_update().get(pk=LabSettings.get().pk)
        values = after(lab)
        before = {f: getattr(lab, f) for f in values}
        if before == values:
            return lab, False
        for f, v in values.items():
            setattr(lab, f, v)
        lab.save(update_fields=list(values))
        audit_record(actor=actor, action=action, target=lab, before=_audited(before), after=_audited(values))
    return lab, True


def _audited(values: dict) -> dict:
    return {f: v.isoformat() if hasattr(v, "isoformat") else v for f, v in values.items()}


def lab_settings_update(
    *, actor, labels_required_train: int, labels_required_heldout: int, blind_heldout: bool,
    slides_train: bool | None = None, two_step_release: bool | None = None,
) -> LabSettings:
    """Change how many independent readings a cell needs, the blind mode, whether cells verified on
    slides train the next model and whether a slide's report needs a second user's release (None:
    unchanged); audited. Slides already awaiting release stay so when two-step release is turned off.

    Cells already final keep their label; cells still waiting are re-evaluated under the new rule.
    """
    for name, value in (("labels_required_train", labels_required_train), ("labels_required_heldout", labels_required_heldout)):
        if not 1 <= int(value) <= 5:
            raise ValidationError({name: "Between 1 and 5 readings."})
    with transaction.atomic():
        lab, changed = lab_settings_change(actor=actor, action=AuditAction.SETTINGS_LABELLING, after=lambda lab: {
            "labels_required_train": int(labels_required_train),
            "labels_required_heldout": int(labels_required_heldout), "blind_heldout": bool(blind_heldout),
            "slides_train": lab.slides_train if slides_train is None else bool(slides_train),
            "two_step_release": lab.two_step_release if two_step_release is None else bool(two_step_release)})
        if not changed:
            return lab
        waiting = CellImage.objects.filter(
            final_label__isnull=True, adjudications__isnull=True, labels__superseded_at__isnull=True
        ).distinct()
        for image in waiting.select_related("final_label"):
            _final_label_recompute(image)
    return lab


# --- Thumbnails ----------------------------------------------------------------------------
THUMB_SIZES = (96, 128, 256)


def image_thumbnail(*, image: CellImage, size: int = 128):
    """Path of a small JPEG of the image under MEDIA_ROOT/thumbs/, made on first request."""
    from PIL import Image as PILImage

    if size not in THUMB_SIZES:
        raise ValidationError({"size": f"Thumbnail sizes: {', '.join(map(str, THUMB_SIZES))}."})
    path = Path(settings.MEDIA_ROOT) / "thumbs" / str(size) / image.sha256[:2] / f"{image.sha256}.jpg"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with image.file.open("rb") as handle, PILImage.open(handle) as src:
        src.draft("RGB", (size, size))
        thumb = src.convert("RGB")
        thumb.thumbnail((size, size), PILImage.Resampling.LANCZOS)
        # atomic: a concurrent request sees no file or the whole file
        atomic_write(path, lambda tmp: thumb.save(tmp, format="JPEG", quality=85, optimize=True))
    return path
