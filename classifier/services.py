"""Rows <-> the pure ML library: classification, training runs, model versions."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotations.audit import audit_record
from annotations.models import AuditAction, CellImage, LabSettings, Source, Split
from classifier.ml.ensembles import ENSEMBLES
from classifier.ml.io import json_clean, json_sha256
from classifier.ml.voting import checkpoint_threshold
from leukoportal.queueing import enqueue_on_commit
from slides.models import SlideCell
from sources.models import default_source_id

from .enqueue import classification_enqueue_on_commit
from .models import ModelVersion, Prediction, TrainingRun
from .new_sources import refer_unlearned, source_training_counts
from .selectors import model_version_active, threshold_applied

log = logging.getLogger(__name__)


# --- Model loading -------------------------------------------------------------------------
def checkpoint_abspath(version: ModelVersion) -> Path:
    return Path(settings.MODEL_DIR) / version.checkpoint


def ensemble_load(version: ModelVersion):
    """The version's ensemble, loaded once per process (the library caches by sha256)."""
    from classifier.ml import api

    path = checkpoint_abspath(version)
    if not path.exists():
        raise FileNotFoundError(f"The checkpoint of model version {version.pk} is missing: {path}")
    return api.load_ensemble(path, device=settings.CLASSIFIER_DEVICE, runtime=settings.CLASSIFIER_RUNTIME)


# --- Classification ------------------------------------------------------------------------
def images_classify(*, image_ids: list[int], model_version_id: int, batch_size: int = 32,
                    progress: Callable[[int], None] | None = None) -> int:
    """Classify the images that have no prediction from this version yet. Idempotent.
    ``progress(done)`` is called after each batch."""
    version = ModelVersion.objects.get(pk=model_version_id)
    done = set(
        Prediction.objects.filter(model_version=version, image_id__in=image_ids).values_list("image_id", flat=True)
    )
    todo = list(CellImage.objects.filter(pk__in=image_ids).exclude(pk__in=done).order_by("pk"))
    if not todo:
        return 0
    model = ensemble_load(version)
    if progress is not None:
        progress(0)  # loading (and compiling) the ensemble can take a while in a fresh worker
    from classifier.ml.engine import Probabilities

    applied = threshold_applied(version)
    created = 0
    done_count = 0
    # one source's images together: where most of them are unlike the training images (a new
    # microscope), their best guesses are read on features aligned to the training cells'
    # (classifier.ml.alignment), which needs the whole group's features
    groups: dict[int | None, list[CellImage]] = {}
    for img in todo:
        groups.setdefault(img.acquisition_source_id, []).append(img)
    realign = model.can_realign()
    # a source other than the default is learned class by class: until the version trained on
    # enough of its verified cells of a class, calls of that class on it are referred
    # (classifier.new_sources)
    learning = source_training_counts(version, set(groups) - {default_source_id()})
    for source_id, group in groups.items():
        parts = []
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            paths = [Path(default_storage.path(img.file.name)) for img in chunk]
            parts.append(model.predict_proba(paths, threshold=applied.value, keep_features=realign, align=False))
            done_count += len(chunk)
            if progress is not None:
                progress(done_count)
        proba = Probabilities.concat(parts)
        if realign:
            proba = model.realign(proba)
        preds = model.decide(proba, threshold=applied.value, min_agreement=applied.min_agreement)
        if source_id in learning:
            held = refer_unlearned(preds, learning[source_id])
            if held:
                log.info("Model version %s: %d call(s) on source %s referred (too few of that source's "
                         "verified cells of the class in training)", version.pk, held, source_id)
        rows = [
            Prediction(
                image=img,
                model_version=version,
                label=p.label,
                top_class=p.top_class,
                confidence=float(p.confidence),
                agreement=p.agreement,
                n_backbones=p.n_backbones,
                abstained=p.abstained,
                reasons=p.reasons,
                ood_score=p.ood_score,
                per_backbone=p.per_backbone,
                probabilities=p.probabilities,
            )
            for img, p in zip(group, preds)
        ]
        Prediction.objects.bulk_create(rows, ignore_conflicts=True)
        created += len(rows)
    return created


def images_unclassified_sweep(*, older_than_s: int = 120, limit: int = 5000) -> int:
    """Send classification again for cells the active model has not read, uploaded more than
    ``older_than_s`` seconds ago (a newer upload's message is probably on its way). Its message was
    lost with the broker, or the worker died holding it; a second message only classifies what is
    still missing."""
    version = model_version_active()
    if version is None:
        return 0
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    ids = list(
        CellImage.objects.exclude(source="field")
        .filter(uploaded_at__lt=cutoff)
        .exclude(predictions__model_version=version)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    for start in range(0, len(ids), 256):
        classification_enqueue_on_commit(image_ids=ids[start : start + 256], model_version=version)
    return len(ids)


# --- Model versions ------------------------------------------------------------------------
def model_version_activate(*, version: ModelVersion, actor=None, reason: str = "promotion", note: str = "") -> ModelVersion:
    """Make ``version`` the active one; the previous active version is retired. Audited as
    ``model.<reason>``, with the person's ``note`` (why) when they gave one."""
    if version.status in (ModelVersion.Status.TRAINING, ModelVersion.Status.FAILED):
        raise ValueError(f"Model version {version.pk} is {version.status} and cannot be activated.")
    with transaction.atomic():
        previous = (
            ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).exclude(pk=version.pk).first()
        )
        if previous:
            previous.status = ModelVersion.Status.RETIRED
            previous.save(update_fields=["status"])
        version.status = ModelVersion.Status.ACTIVE
        version.activated_at = timezone.now()
        version.save(update_fields=["status", "activated_at"])
        audit_record(
            actor=actor,
            action=AuditAction(f"model.{reason}"),
            target=version,
            before={"active": previous.pk if previous else None},
            after={"active": version.pk, **({"reason": note} if note else {})},
        )
    return version


def _decision_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why: the reason is kept in the audit log."})
    return reason[:500]


def model_version_promote(*, version: ModelVersion, actor, reason: str) -> ModelVersion:
    """A lab admin activates a candidate explicitly, whatever the gate said, and says why. Audited."""
    reason = _decision_reason(reason)
    version.refresh_from_db(fields=["status", "activated_at"])
    if version.status == ModelVersion.Status.ACTIVE:
        raise ValidationError(f"Model version {version.pk} is already active.")
    if version.status not in (ModelVersion.Status.CANDIDATE, ModelVersion.Status.RETIRED):
        raise ValidationError(f"Model version {version.pk} is {version.status} and cannot be promoted.")
    return model_version_activate(version=version, actor=actor, reason="promote", note=reason)


def model_version_rollback(*, version: ModelVersion, actor, reason: str) -> ModelVersion:
    """Make a version that was active before active again, and say why. Audited as ``model.rollback``
    when it is older than the active version, ``model.reactivate`` when it is newer (going forward
    again after a rollback). Past predictions keep their version."""
    reason = _decision_reason(reason)
    version.refresh_from_db(fields=["status", "activated_at"])
    if version.status != ModelVersion.Status.RETIRED or version.activated_at is None:
        raise ValidationError(f"Model version {version.pk} was never active (it is {version.status}); "
                              "promote it instead.")
    active = model_version_active()
    action = "reactivate" if active is not None and version.pk > active.pk else "rollback"
    return model_version_activate(version=version, actor=actor, reason=action, note=reason)


def model_version_from_training(*, result, ensemble: str, mode: str, snapshot: dict, created_by=None,
                                version: ModelVersion | None = None) -> ModelVersion:
    """Register a finished training: checkpoint under MODEL_DIR, snapshot, metrics; a candidate."""
    rel = Path(result.checkpoint_path).resolve().relative_to(Path(settings.MODEL_DIR).resolve())
    fields = dict(
        ensemble=ensemble,
        mode=mode,
        backbones=list(result.backbones),
        classes=list(result.classes),
        checkpoint=str(rel),
        checkpoint_sha256=result.checkpoint_sha256,
        snapshot=snapshot,
        snapshot_hash=json_sha256(snapshot.get("items", [])),
        config=json_clean(result.config),
        metrics=json_clean(result.metrics),
        history=json_clean(result.history),
        **_threshold_fields(result),
        status=ModelVersion.Status.CANDIDATE,
    )
    if version is None:
        version = ModelVersion.objects.create(created_by=created_by, **fields)
    else:
        for key, value in fields.items():
            setattr(version, key, value)
        version.save()
    audit_record(actor=created_by, action=AuditAction.MODEL_TRAINED, target=version,
                 after={"ensemble": ensemble, "mode": mode, "images": len(snapshot.get("items", []))})
    return version


def _threshold_fields(result) -> dict:
    """The version's own threshold, as its checkpoint applies it (never 0)."""
    threshold = result.threshold
    if threshold is None:  # a result made without one: the rule the engine applies to its checkpoint
        threshold = checkpoint_threshold({"metrics": result.metrics, "config": result.config})
    return {"default_threshold": threshold.value, "threshold_source": threshold.source,
            "threshold_why": threshold.why[:300]}


# --- Training runs -------------------------------------------------------------------------
class TrainingBusy(Exception):
    pass


def training_run_start(*, user, ensemble: str = "offline", mode: str = "default", epochs: int | None = None,
                       trigger: str = "admin", retry_of: TrainingRun | None = None) -> TrainingRun:
    if ensemble not in ENSEMBLES:
        raise ValueError(f"Unknown ensemble {ensemble!r}; use one of {', '.join(ENSEMBLES)}.")
    if mode not in ("default", "frozen", "finetune"):
        raise ValueError(f"Unknown mode {mode!r}; use default, frozen or finetune.")
    if epochs is not None and not (1 <= epochs <= 500):
        raise ValueError("Epochs must be between 1 and 500.")
    with transaction.atomic():
        busy = TrainingRun.objects.select_for_update().filter(
            status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
        )
        if busy.exists():
            raise TrainingBusy(f"Training run {busy.first().pk} is still {busy.first().status}.")
        run = TrainingRun.objects.create(
            ensemble=ensemble, mode=mode, epochs=epochs, trigger=trigger, created_by=user, retry_of=retry_of,
            progress={"stage": "queued"},
        )
        audit_record(actor=user, action=AuditAction.TRAINING_START, target=run,
                     after={"ensemble": ensemble, "mode": mode, "epochs": epochs, "trigger": trigger})
        training_run_enqueue_on_commit(run_id=run.pk)
    return run


#: What the worker runs after a training run, with the new version's id (a chain by task name).
GATE_TASK = "reports.tasks.gate_model_version"


def training_run_enqueue_on_commit(*, run_id: int) -> None:
    """After the commit, send the run to the training worker, chained to the promotion gate."""
    enqueue_on_commit("classifier.tasks.train_model_version", run_id, link=GATE_TASK)


def training_runs_queued_resend(*, older_than_s: int = 120) -> int:
    """Send again the message of runs queued for more than ``older_than_s`` seconds (lost with the
    broker). A second message is harmless: the run is claimed with a conditional UPDATE. The heartbeat
    records the resend, so a run is resent at most once per period."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    ids = list(TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)).values_list("pk", flat=True))
    resent = 0
    for run_id in ids:
        with transaction.atomic():
            if TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(heartbeat_at=timezone.now()):
                training_run_enqueue_on_commit(run_id=run_id)
                resent += 1
    return resent


def training_run_cancel(*, run: TrainingRun, user) -> TrainingRun:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            return run
        run.cancel_requested = True
        if run.status == TrainingRun.Status.QUEUED:
            run.status = TrainingRun.Status.CANCELLED
            run.finished_at = timezone.now()
        run.save(update_fields=["cancel_requested", "status", "finished_at"])
        audit_record(actor=user, action=AuditAction.TRAINING_CANCEL, target=run)
    return run


def training_snapshot() -> tuple[list, dict]:
    """Freeze the final labels of the train split (held-out cells never train): labelled cells
    and, unless the lab's settings say slides do not train, cells verified on slides, with their
    provenance (``provenance["slide_cell"]``: [image id, slide id] pairs)."""
    from classifier.ml.api import TrainItem

    sources = [Source.CELL] + ([Source.SLIDE_CELL] if LabSettings.get().slides_train else [])
    images = (
        CellImage.objects.filter(split=Split.TRAIN, final_label__isnull=False, final_label__is_abstain=False,
                                 source__in=sources)
        .select_related("final_label")
        .order_by("pk")
    )
    items, rows, from_slides = [], [], []
    for img in images:
        items.append(TrainItem(path=Path(default_storage.path(img.file.name)), sha256=img.sha256, label=img.final_label.code))
        rows.append([img.pk, img.sha256, img.final_label.code])
        if img.source == Source.SLIDE_CELL:
            from_slides.append(img.pk)
    slide_of = {}
    for image_id, slide_id in (SlideCell.objects.filter(image_id__in=from_slides).order_by("slide_id")
                               .values_list("image_id", "slide_id")):
        slide_of.setdefault(image_id, slide_id)
    provenance = {"slide_cell": [[pk, slide_of.get(pk)] for pk in from_slides]}
    return items, {"source": "labels", "items": rows, "provenance": provenance}


def training_run_execute(*, run_id: int) -> ModelVersion | None:
    """Run a queued training. Claimed with a conditional UPDATE, so a second delivery does nothing."""
    from classifier.ml import api

    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now(),
        progress={"stage": "snapshot"},
    )
    if not claimed:
        log.info("Training run %s is not queued; nothing to do.", run_id)
        return None
    run = TrainingRun.objects.get(pk=run_id)
    last_write = [0.0]

    def progress(info: dict) -> None:
        now = time.monotonic()
        if now - last_write[0] < 0.5 and info.get("stage") != "done":
            return
        last_write[0] = now
        TrainingRun.objects.filter(pk=run_id).update(progress=info, heartbeat_at=timezone.now())

    def should_cancel() -> bool:
        return TrainingRun.objects.filter(pk=run_id, cancel_requested=True).exists()

    try:
        items, snapshot = training_snapshot()
        classes = sorted({item.label for item in items})
        if len(classes) < 2:
            raise ValueError(
                f"Training needs final labels of at least two classes in the train split; found {len(items)} "
                f"labelled images in {len(classes)} class(es)."
            )
        out_dir = Path(settings.MODEL_DIR) / f"run-{run.pk}"
        result = api.train(
            items, classes=classes, ensemble=run.ensemble, mode=run.mode, epochs=run.epochs,
            cache_dir=Path(settings.FEATURE_CACHE_DIR), out_dir=out_dir, device=settings.CLASSIFIER_DEVICE,
            runtime=settings.CLASSIFIER_RUNTIME,
            progress=progress, should_cancel=should_cancel,
            **_train_test_options(),
        )
        version = model_version_from_training(result=result, ensemble=run.ensemble, mode=run.mode,
                                              snapshot=snapshot, created_by=run.created_by)
    except api.TrainingCancelled:
        TrainingRun.objects.filter(pk=run_id).update(status=TrainingRun.Status.CANCELLED, finished_at=timezone.now(),
                                                     progress={"stage": "cancelled"})
        return None
    except Exception as exc:
        log.exception("Training run %s failed", run_id)
        TrainingRun.objects.filter(pk=run_id).update(
            status=TrainingRun.Status.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"[:4000]
        )
        audit_record(actor=None, action=AuditAction.TRAINING_FAILED, target=("TrainingRun", run_id), after={"error": str(exc)[:500]})
        return None
    TrainingRun.objects.filter(pk=run_id).update(
        status=TrainingRun.Status.SUCCEEDED, finished_at=timezone.now(), model_version=version,
        progress={"stage": "done", "model_version": version.pk},
    )
    return version


def _train_test_options() -> dict:
    """Random-initialised backbones and recipe overrides, for tests and fault benchmarks only
    (CLASSIFIER_TRAIN_WEIGHTS=none, CLASSIFIER_TRAIN_OVERRIDES='{"input_size": 64}'); empty by default."""
    options = {}
    if getattr(settings, "CLASSIFIER_TRAIN_WEIGHTS", "imagenet") == "none":
        options["weights"] = None
    if getattr(settings, "CLASSIFIER_TRAIN_OVERRIDES", None):
        options["config_overrides"] = dict(settings.CLASSIFIER_TRAIN_OVERRIDES)
    return options


def training_runs_mark_stale(*, older_than_s: int = 600) -> int:
    """A running training whose worker died stops heartbeating: mark it failed (can be retried)."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    return TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=TrainingRun.Status.FAILED, finished_at=timezone.now(),
        error="The worker stopped while training (killed, out of memory or restarted). Retry to start again.",
    )


def training_run_retry(*, run: TrainingRun, user, trigger: str = "admin") -> TrainingRun:
    """Start a new run with the settings of a failed or cancelled one (linked by ``retry_of``)."""
    if run.status not in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
        raise ValueError(f"Training run {run.pk} is {run.status}; only a failed or cancelled run can be retried.")
    return training_run_start(user=user, ensemble=run.ensemble, mode=run.mode, epochs=run.epochs, trigger=trigger,
                              retry_of=run)
