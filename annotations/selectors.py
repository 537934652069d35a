from dataclasses import dataclass

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.http import Http404

from classifier.ml.reasons import OUT_OF_DISTRIBUTION, reason_text
from classifier.models import Prediction
from classifier.selectors import model_version_active, predictions_latest_for
from competency.exam import exam_image_ids
from leukoportal.roles import REVIEWER, has_role

from .models import AuditAction, AuditEvent, CellClass, CellImage, Label, LabSettings, Source, Split


def cell_classes_active() -> QuerySet[CellClass]:
    return CellClass.objects.filter(active=True).order_by("display_order", "code")


def image_file_open(*, image: CellImage):
    """The image's stored PNG, open for reading; Http404 when its file is missing (a row that
    outlived its file), which the pages and the API both answer as a 404."""
    try:
        return image.file.open("rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None


def images_list(*, split: str | None = None, labelled: bool | None = None, source: str | None = None) -> QuerySet[CellImage]:
    qs = CellImage.objects.select_related("final_label").order_by("-id")
    if split:
        qs = qs.filter(split=split)
    if source:
        qs = qs.filter(source=source)
    if labelled is True:
        qs = qs.filter(final_label__isnull=False)
    elif labelled is False:
        qs = qs.filter(final_label__isnull=True)
    return qs


def audit_events(*, action: str = "", user: str = "", target: str = "", start=None, end=None) -> QuerySet[AuditEvent]:
    """The audit log, newest first, filtered by a part of the action and of the user name, a target
    ("ModelVersion", "12", "CellImage 12" or "CellImage:12": a type matches in part, an id exactly)
    and a date range (inclusive)."""
    qs = AuditEvent.objects.select_related("actor").order_by("-id")
    if action:
        qs = qs.filter(action__icontains=action.strip())
    if user:
        qs = qs.filter(actor__username__icontains=user.strip())
    for part in target.replace(":", " ").split():
        qs = qs.filter(target_id=part) if part.isdigit() else qs.filter(target_type__icontains=part)
    if start:
        qs = qs.filter(created_at__date__gte=start)
    if end:
        qs = qs.filter(created_at__date__lte=end)
    return qs


def image_history(*, image: CellImage) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(target_type="CellImage", target_id=str(image.pk)).select_related("actor").order_by("id")


def dashboard_counts() -> dict:
    agg = CellImage.objects.aggregate(
        total=Count("id"),
        train=Count("id", filter=Q(split="train")),
        heldout=Count("id", filter=Q(split="heldout")),
        labelled=Count("id", filter=Q(final_label__isnull=False)),
        review=Count("id", filter=Q(needs_review=True)),
    )
    return agg


# --- Labelling queues ----------------------------------------------------------------------
QUEUES = {
    "unlabelled": "Unlabelled",
    "prelabelled": "Model pre-labelled, least confident first",
    "unsure": "Flagged 'not sure' by others",
    "heldout": "Held-out, still needing labels",
}
# Cells found in slide fields are read on the slide's verification screen by a reviewer, whose
# verification is their label: they never wait in the labellers' queues.
LABELLING_SOURCES = (Source.CELL,)


def _current_labels(**filters):
    return Label.objects.filter(image=OuterRef("pk"), superseded_at__isnull=True, **filters)


def _needing_readers(*, user, lab: LabSettings) -> QuerySet[CellImage]:
    """Cells still waiting for readings that this expert has not read (blind: whoever else has)."""
    # current_label_count is kept by the label services, so this is an index range, not a subquery per cell
    waiting = Q(split=Split.HELDOUT, current_label_count__lt=lab.labels_required_heldout) | Q(
        split=Split.TRAIN, current_label_count__lt=lab.labels_required_train
    )
    return (
        CellImage.objects.filter(source__in=LABELLING_SOURCES, final_label__isnull=True, needs_review=False)
        .filter(waiting)
        .exclude(Exists(_current_labels(labeller=user)))
    )


_ACTIVE = object()  # "look the active model version up"


def labelling_queue(*, user, queue: str, lab: LabSettings | None = None, version=_ACTIVE) -> QuerySet[CellImage]:
    """The cells of one queue for one expert, in the order they should be read.

    unlabelled: training cells still needing readings; prelabelled: cells with a prediction of the
    active model, least confident first (held-out cells only when the lab is not blind); unsure:
    cells another expert flagged 'not sure'; heldout: held-out cells still needing readings.
    A cell this expert already read is in none of them (their own label is changed on the cell's page).
    ``version``: the active model version when the caller already has it (None: there is none).
    """
    if queue not in QUEUES:
        raise KeyError(queue)
    qs = _labelling_queue(user=user, queue=queue, lab=lab or LabSettings.get(), version=version)
    held_back = exam_image_ids(user)  # a cell re-opened after its test was frozen: answered in the test only
    return qs.exclude(pk__in=held_back) if held_back else qs


def _labelling_queue(*, user, queue: str, lab: LabSettings, version) -> QuerySet[CellImage]:
    if queue == "unlabelled":
        return _needing_readers(user=user, lab=lab).filter(split=Split.TRAIN).order_by("id")
    if queue == "heldout":
        return _needing_readers(user=user, lab=lab).filter(split=Split.HELDOUT).order_by("id")
    if queue == "prelabelled":
        if version is _ACTIVE:
            version = model_version_active()
        if version is None:
            return CellImage.objects.none()
        qs = _needing_readers(user=user, lab=lab).exclude(lab.blind_cells())
        # a join (one prediction per image and version), not a correlated subquery: PostgreSQL sorts once
        return (
            qs.filter(predictions__model_version=version)
            .annotate(suggestion_confidence=F("predictions__confidence"))
            .order_by("suggestion_confidence", "id")
        )
    # unsure: someone else's current label says 'not sure'; not yet decided by a reviewer
    qs = (
        CellImage.objects.filter(source__in=LABELLING_SOURCES, final_label__isnull=True)
        .filter(Exists(_current_labels(unsure=True).exclude(labeller=user)))
        .exclude(Exists(_current_labels(labeller=user)))
        .exclude(adjudications__isnull=False)
    )
    # another expert's 'not sure' is their reading: blind held-out cells go to a reviewer instead
    # (LabSettings.hides_other_readings)
    return qs.exclude(lab.blind_cells()).order_by("id")


def labelling_queue_counts(*, user, lab: LabSettings | None = None) -> dict[str, int]:
    """How many cells each queue holds for this expert (four COUNTs: faster here than one pass with
    every subquery evaluated on every cell, because each lets PostgreSQL use anti-joins)."""
    lab = lab or LabSettings.get()
    return {name: labelling_queue(user=user, queue=name, lab=lab).count() for name in QUEUES}


def model_call_text(*, name: str, confidence: float | None, abstained: bool) -> str:
    """How every screen words the model's call on a cell: "Monocyte 81%", or, when the model
    abstained (referred the cell to an expert), "referred (best guess Monocyte 41%)": a best guess
    the expert classifies, never a call to confirm. ("Not sure" is an expert's flag, never the model's.)"""
    share = "" if confidence is None else f" {round(confidence * 100)}%"  # rounded as {% widthratio %} did
    return f"referred (best guess {name}{share})" if abstained else f"{name}{share}"


@dataclass(frozen=True)
class Suggestion:
    code: str
    name: str
    confidence: float
    abstained: bool
    model_version_id: int
    reasons: tuple[str, ...] = ()  # why the model referred the cell (codes, most serious first)
    ood_score: float | None = None

    @property
    def text(self) -> str:
        return model_call_text(name=self.name, confidence=self.confidence, abstained=self.abstained)

    @property
    def reason(self) -> str:
        """Why the model referred the cell, in words ("" when it did not)."""
        return reason_text(self.reasons)

    @property
    def out_of_distribution(self) -> bool:
        return OUT_OF_DISTRIBUTION in self.reasons


def class_names() -> dict[str, str]:
    """Every class's name by code (inactive classes too: past labels and predictions keep them)."""
    return dict(CellClass.objects.values_list("code", "name"))


def _suggestion(prediction, names: dict[str, str]) -> Suggestion | None:
    code = prediction.top_class if prediction.abstained else prediction.label
    if code not in names:
        return None
    return Suggestion(code, names[code], prediction.confidence, prediction.abstained, prediction.model_version_id,
                      tuple(prediction.reasons or ()), prediction.ood_score)


def suggestions_for(*, images, user, lab: LabSettings | None = None, version=_ACTIVE,
                    names: dict[str, str] | None = None) -> dict[int, Suggestion]:
    """The active model's suggestion per image, except where the lab's blind rule hides the model's
    call from this reader (:meth:`LabSettings.hides_model_call`).

    When the model abstained, its top class is offered, marked as abstained. ``version`` and
    ``names`` (class code -> name, every class) save their lookups when the caller has them.
    """
    images = list(images)
    lab = lab or LabSettings.get()
    visible = [im.pk for im in images if not lab.hides_model_call(image=im, user=user)]
    if version is _ACTIVE:
        version = model_version_active()
    if not visible or version is None:
        return {}
    rows = Prediction.objects.filter(image_id__in=visible, model_version=version).only(
        "image_id", "label", "top_class", "confidence", "abstained", "model_version_id", "reasons", "ood_score"
    )
    if names is None:
        names = class_names()
    out = {}
    for p in rows:
        suggestion = _suggestion(p, names)
        if suggestion is not None:
            out[p.image_id] = suggestion
    return out


def model_calls_latest(*, images, user, lab: LabSettings | None = None) -> dict[int, Suggestion]:
    """The model's call per image for the review screen: the active version's, else the newest one,
    except where the lab's blind rule hides it from this reader."""
    lab = lab or LabSettings.get()
    visible = [im.pk for im in images if not lab.hides_model_call(image=im, user=user)]
    if not visible:
        return {}
    names = class_names()
    out = {}
    for pk, p in predictions_latest_for(visible).items():
        suggestion = _suggestion(p, names)
        if suggestion is not None:
            out[pk] = suggestion
    return out


def labels_current_of(*, user, image_ids) -> dict[int, Label]:
    return {
        lb.image_id: lb
        for lb in Label.objects.filter(image_id__in=list(image_ids), labeller=user, superseded_at__isnull=True)
        .select_related("cell_class", "suggested_class")
    }


def adjudication_queue(*, user=None) -> QuerySet[CellImage]:
    """The disputed cells waiting for a reviewer; for ``user``, without the cells of a proficiency test open
    for them (their readings side by side would show them other readings)."""
    qs = CellImage.objects.filter(needs_review=True, adjudications__isnull=True).order_by("id")
    held_back = exam_image_ids(user)
    return qs.exclude(pk__in=held_back) if held_back else qs


def labels_side_by_side(*, image_ids) -> dict[int, list[Label]]:
    out: dict[int, list[Label]] = {i: [] for i in image_ids}
    for lb in (
        Label.objects.filter(image_id__in=list(image_ids), superseded_at__isnull=True)
        .select_related("labeller", "cell_class", "suggested_class")
        .order_by("created_at")
    ):
        out[lb.image_id].append(lb)
    return out


def agreement_readings(*, start=None, end=None, split: str | None = None) -> list[tuple[int, str, str]]:
    """Every expert's current reading made in the date range (inclusive), for the agreement page."""
    qs = Label.objects.filter(superseded_at__isnull=True)
    if start:
        qs = qs.filter(created_at__date__gte=start)
    if end:
        qs = qs.filter(created_at__date__lte=end)
    if split:
        qs = qs.filter(image__split=split)
    return list(qs.values_list("image_id", "labeller__username", "cell_class__code").order_by("image_id", "id"))


def image_history_for(*, image: CellImage, user) -> QuerySet[AuditEvent]:
    """A cell's history as this user may see it: reviewers see everything; a labeller reading a cell
    that is not final yet sees only their own label events (blind reading)."""
    history = image_history(image=image)
    if LabSettings.hides_final_label(image=image, user=user):
        return history.filter(actor=user).exclude(action__startswith="label.").exclude(action=AuditAction.IMAGE_FINAL_LABEL)
    if has_role(user, REVIEWER) or image.final_label_id is not None:
        return history
    return history.exclude(Q(action__startswith="label.") & ~Q(actor=user)).exclude(action=AuditAction.IMAGE_FINAL_LABEL)
