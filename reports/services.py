"""Held-out evaluations, the promotion gate, explicit promotion / rollback, scheduled retraining."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from annotations.audit import audit_record
from annotations.models import AuditAction, CellClass, CellImage, LabSettings, Split
from annotations.services import lab_settings_change
from classifier.ml.io import json_clean, json_sha256
from classifier.ml.reasons import LOW_CONFIDENCE, SPLIT_VOTE
from classifier.ml.voting import CURVE_THRESHOLDS, abstention_curve
from classifier.models import ModelVersion, TrainingRun
from classifier.selectors import model_version_active, threshold_applied, training_run_current
from classifier.services import (
    TrainingBusy,
    ensemble_load,
    model_version_activate,
    training_run_start,
)
from leukoportal.queueing import enqueue_on_commit

from . import baselines, gate, metrics
from .models import Evaluation, GateDecision
from .selectors import paired_comparison_of

log = logging.getLogger(__name__)

RETRAIN_TASK_NAME = "Nightly retraining when enough new final labels exist"
RETRAIN_TASK = "reports.tasks.nightly_retrain"


# --- Snapshots ----------------------------------------------------------------------------
def heldout_snapshot() -> dict:
    """Freeze the held-out split's final labels: [[image id, sha256, class code]] and their hash."""
    rows = [
        [pk, sha, code]
        for pk, sha, code in CellImage.objects.filter(
            split=Split.HELDOUT, final_label__isnull=False, final_label__is_abstain=False
        )
        .exclude(source="field")
        .order_by("pk")
        .values_list("pk", "sha256", "final_label__code")
    ]
    return {"source": "heldout", "items": rows, "hash": json_sha256(rows)}


def _paths_for(rows: list) -> tuple[list, list[Path]]:
    """The snapshot rows whose image still exists, and their files."""
    files = dict(CellImage.objects.filter(pk__in=[r[0] for r in rows]).values_list("pk", "file"))
    kept = [r for r in rows if r[0] in files]
    return kept, [Path(default_storage.path(files[r[0]])) for r in kept]


# --- Evaluation ---------------------------------------------------------------------------
_BASELINE_FEATURES: dict[str, np.ndarray] = {}  # sha256 -> features, kept per worker process


def _baseline_features(rows: list, paths: list[Path]) -> np.ndarray:
    if len(_BASELINE_FEATURES) > 200_000:
        _BASELINE_FEATURES.clear()
    return baselines.features_for(paths, cache=_BASELINE_FEATURES, keys=[r[1] for r in rows])


def baselines_evaluate(*, version: ModelVersion, heldout_rows: list, heldout_paths: list[Path], labels: list[str]) -> dict:
    """Table I: the classical classifiers trained on the version's own training snapshot."""
    train_rows, train_paths = _paths_for(list(version.snapshot.get("items", [])))
    if len({r[2] for r in train_rows}) < 2 or len(train_rows) < 3:
        return {"error": f"The training snapshot of v{version.pk} has {len(train_rows)} stored cells "
                         "of fewer than two classes; the baselines cannot be trained."}
    t0 = time.perf_counter()
    X_train = _baseline_features(train_rows, train_paths)
    X_test = _baseline_features(heldout_rows, heldout_paths)
    predicted = baselines.fit_predict(X_train, [r[2] for r in train_rows], X_test)
    actual = [r[2] for r in heldout_rows]
    out = {
        name: dict(metrics.summary(actual, pred, labels), name=baselines.BASELINES[name], predicted=pred)
        for name, pred in predicted.items()
    }
    return {"models": out, "n_train": len(train_rows), "features": "RGB + hue histograms (8 bins) and 12x12 pixels",
            "seconds": round(time.perf_counter() - t0, 2)}


def evaluation_compute(*, version: ModelVersion, rows: list, paths: list[Path]) -> tuple[dict, float, int]:
    """Score ``version`` on the given held-out cells: per backbone, the vote, abstention, baselines."""

    model = ensemble_load(version)
    actual = [r[2] for r in rows]
    labels = list(dict.fromkeys(list(model.classes) + sorted(set(actual))))
    t0 = time.perf_counter()
    applied = threshold_applied(version)
    threshold, min_agreement = applied.value, applied.min_agreement
    proba = model.predict_proba(paths, threshold=threshold)
    # held-out cells are judged one by one: they are not one source's batch (a slide), so the
    # batch rule (classifier.ml.ood.OODCheck.batch_unlike) is left out of this report
    preds = model.decide(proba, threshold=threshold, min_agreement=min_agreement, batch_check=False)
    seconds = time.perf_counter() - t0
    predicted = [p.top_class for p in preds]
    vote = metrics.summary(actual, predicted, labels)
    per_backbone = {}
    tops = {}
    for b in proba.backbones:
        tops[b] = [model.classes[i] for i in np.argmax(proba.per_backbone[b], axis=1)]
        per_backbone[b] = metrics.summary(actual, tops[b], labels)
    best_single = max((s["overall_accuracy"] or 0.0 for s in per_backbone.values()), default=None)
    y_idx = np.array([model.classes.index(a) if a in model.classes else -1 for a in actual])
    # The curve of the rule applied: at each threshold, split votes and the cells referred for a
    # reason that does not depend on the confidence (unlike the training images) are referred too;
    # the operating point's threshold is one of its points, so the point lies on the curve.
    anyway = np.array([bool(set(p.reasons) - {LOW_CONFIDENCE, SPLIT_VOTE}) for p in preds], dtype=bool)
    grid = np.unique(np.append(CURVE_THRESHOLDS, threshold))
    curve = abstention_curve(proba.stacked, y_idx, min_agreement=min_agreement, thresholds=grid,
                             referred_anyway=anyway) if rows else []
    accepted = [(a, p.top_class) for a, p in zip(actual, preds) if not p.abstained]
    operating = {
        "threshold": threshold,
        "min_agreement": min_agreement,
        "n_backbones": len(proba.backbones),
        "source": applied.source,
        "why": applied.why,
        "referred": (sum(p.abstained for p in preds) / len(preds)) if preds else None,
        "accuracy_accepted": (sum(a == t for a, t in accepted) / len(accepted)) if accepted else None,
        "accepted": len(accepted),
    }
    try:
        table_i = baselines_evaluate(version=version, heldout_rows=rows, heldout_paths=paths, labels=labels)
    except Exception as exc:  # noqa: BLE001 - the CNN report stands without the baselines
        log.exception("Baselines failed for model version %s", version.pk)
        table_i = {"error": f"{type(exc).__name__}: {exc}"}
    results = {
        "classes": labels,
        "backbones": list(proba.backbones),
        "vote": vote,
        "per_backbone": per_backbone,
        "ensemble_gain": (vote["overall_accuracy"] - best_single)
        if vote["overall_accuracy"] is not None and best_single is not None else None,
        "abstention": {"curve": curve, "operating_point": operating, "rule": "applied",
                       "referred_anyway": int(anyway.sum())},
        "baselines": table_i,
        "cells": [
            [r[0], r[2], p.top_class, p.label, round(float(p.confidence), 4), p.agreement,
             {b: tops[b][i] for b in proba.backbones}]
            for i, (r, p) in enumerate(zip(rows, preds))
        ],
        "timing": {"seconds": round(seconds, 3), "cells_per_second": (len(rows) / seconds) if seconds > 0 else None},
    }
    return json_clean(results), threshold, min_agreement


def evaluation_run(*, model_version: ModelVersion, snapshot: dict | None = None, trigger: str = "gate",
                   requested_by=None, evaluation: Evaluation | None = None) -> Evaluation:
    """Evaluate now (in this process) and store the result. On an exception the row is failed and it re-raises."""
    snapshot = snapshot if snapshot is not None else heldout_snapshot()
    items = list(snapshot.get("items", []))
    fields = dict(snapshot={"items": items}, snapshot_hash=snapshot.get("hash") or json_sha256(items), n_cells=len(items),
                  status=Evaluation.Status.RUNNING)
    if evaluation is None:
        evaluation = Evaluation.objects.create(model_version=model_version, trigger=trigger, requested_by=requested_by,
                                               **fields)
    else:
        Evaluation.objects.filter(pk=evaluation.pk).update(**fields)
        evaluation.refresh_from_db()
    try:
        if not items:
            raise ValueError("No held-out cell has a final label yet; label some held-out cells first.")
        rows, paths = _paths_for(items)
        results, threshold, min_agreement = evaluation_compute(version=model_version, rows=rows, paths=paths)
        results["missing_images"] = len(items) - len(rows)
    except Exception as exc:
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status=Evaluation.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000], finished_at=timezone.now()
        )
        evaluation.refresh_from_db()
        raise
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Evaluation.Status.SUCCEEDED, results=results, threshold=threshold, min_agreement=min_agreement,
        finished_at=timezone.now(), error="",
    )
    evaluation.refresh_from_db()
    return evaluation


def evaluation_request(*, model_version: ModelVersion, user, trigger: str = "admin") -> Evaluation:
    """Queue an evaluation of ``model_version`` on the current held-out snapshot (Celery, after commit)."""
    if model_version.status in (ModelVersion.Status.TRAINING, ModelVersion.Status.FAILED):
        raise ValidationError(f"Model version {model_version.pk} is {model_version.status} and cannot be evaluated.")
    snapshot = heldout_snapshot()
    if not snapshot["items"]:
        raise ValidationError("No held-out cell has a final label yet; label some held-out cells first.")
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            model_version=model_version, trigger=trigger, requested_by=user, snapshot={"items": snapshot["items"]},
            snapshot_hash=snapshot["hash"], n_cells=len(snapshot["items"]),
        )
        audit_record(actor=user, action=AuditAction.EVALUATION_REQUEST, target=evaluation,
                     after={"model_version": model_version.pk, "cells": len(snapshot["items"])})
        enqueue_on_commit("reports.tasks.evaluate_model_version", evaluation.pk)
    return evaluation


def evaluations_queued_resend(*, older_than_s: int = 120) -> int:
    """Send again the message of evaluations queued for more than ``older_than_s`` seconds (lost with
    the broker). A second message is harmless: the evaluation is claimed with a conditional UPDATE."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    ids = list(Evaluation.objects.filter(status=Evaluation.Status.QUEUED, created_at__lt=cutoff)
               .values_list("pk", flat=True))
    for evaluation_id in ids:
        enqueue_on_commit("reports.tasks.evaluate_model_version", evaluation_id)
    return len(ids)


def evaluation_execute(*, evaluation_id: int) -> Evaluation | None:
    """Run a queued evaluation; claimed with a conditional UPDATE so a second delivery does nothing."""
    claimed = Evaluation.objects.filter(pk=evaluation_id, status=Evaluation.Status.QUEUED).update(
        status=Evaluation.Status.RUNNING
    )
    if not claimed:
        return None
    evaluation = Evaluation.objects.select_related("model_version").get(pk=evaluation_id)
    snapshot = {"items": evaluation.snapshot.get("items", []), "hash": evaluation.snapshot_hash}
    try:
        return evaluation_run(model_version=evaluation.model_version, snapshot=snapshot, evaluation=evaluation)
    except Exception:  # noqa: BLE001 - recorded on the row
        log.exception("Evaluation %s failed", evaluation_id)
        return Evaluation.objects.get(pk=evaluation_id)


def evaluation_for_snapshot(*, model_version: ModelVersion, snapshot: dict) -> Evaluation:
    """A succeeded evaluation of this version on exactly this snapshot: reused, else computed now."""
    found = Evaluation.objects.filter(model_version=model_version, snapshot_hash=snapshot["hash"],
                                      status=Evaluation.Status.SUCCEEDED).order_by("-id").first()
    return found or evaluation_run(model_version=model_version, snapshot=snapshot, trigger="comparison")


# --- Promotion gate -----------------------------------------------------------------------
def heldout_sample(*, items: list, classes: list[str], lab: LabSettings) -> dict:
    """The held-out snapshot's size, in total and per class the versions know (a class neither
    version can predict says nothing about which is better), against the lab's minimums for the gate
    to decide on its own."""
    from collections import Counter

    abstain = set(CellClass.objects.filter(is_abstain=True).values_list("code", flat=True))
    counts = Counter(row[2] for row in items)
    per_class = {c: counts.get(c, 0) for c in sorted(set(classes)) if c not in abstain}
    short = {c: n for c, n in per_class.items() if n < lab.gate_min_heldout_per_class}
    return {"total": len(items), "min_total": lab.gate_min_heldout_total, "per_class": per_class,
            "min_per_class": lab.gate_min_heldout_per_class, "short": short,
            "enough": len(items) >= lab.gate_min_heldout_total and not short}


def model_version_evaluate_and_gate(*, model_version_id: int) -> GateDecision | None:
    """Evaluate a freshly trained version on the held-out snapshot; activate it only if it is not
    worse than the active version on the same cells (:func:`reports.gate.gate_decide`). Every decision
    is stored and audited."""
    version = ModelVersion.objects.get(pk=model_version_id)
    if version.status != ModelVersion.Status.CANDIDATE:
        log.info("Model version %s is %s; the gate only decides on candidates.", version.pk, version.status)
        return None
    lab = LabSettings.get()
    snapshot = heldout_snapshot()
    active = model_version_active()
    names = dict(CellClass.objects.values_list("code", "name"))
    sample = heldout_sample(items=snapshot["items"], lab=lab,
                            classes=list(version.classes) + (list(active.classes) if active else []))
    evaluation, compared, failure = _gate_evaluations(version=version, active=active, snapshot=snapshot)
    comparison = paired_comparison_of(evaluation, compared) if compared is not None else {}
    outcome, reasons = gate.gate_decide(
        version=version.pk, active=active.pk if active else None, n_items=len(snapshot["items"]),
        new=_scored(evaluation), old=_scored(compared), failure=failure, sample=sample,
        margin=float(lab.promotion_margin), names=names, comparison=comparison)
    with transaction.atomic():
        decision = GateDecision.objects.create(
            model_version=version, evaluation=evaluation, compared_with=active, compared_evaluation=compared,
            outcome=GateDecision.Outcome(outcome), reasons=reasons, margin=float(lab.promotion_margin),
            comparison=comparison, sample=sample,
        )
        audit_record(actor=None, action=AuditAction.MODEL_GATE, target=version,
                     before={"active": active.pk if active else None},
                     after={"outcome": outcome, "reasons": reasons, "evaluation": getattr(evaluation, "pk", None)})
        if decision.activated:
            model_version_activate(version=version, actor=None, reason="gate")
    return decision


def _gate_evaluations(*, version: ModelVersion, active: ModelVersion | None, snapshot: dict):
    """The candidate's evaluation on the snapshot and, when a version is active, the active one's on the
    same cells: (evaluation, compared, failure), where ``failure`` says why one could not be had."""
    if not snapshot["items"]:
        return None, None, None
    try:
        evaluation = evaluation_run(model_version=version, snapshot=snapshot, trigger="gate")
    except Exception as exc:  # noqa: BLE001 - recorded as the decision's reason
        log.exception("Gate evaluation of model version %s failed", version.pk)
        return None, None, f"{type(exc).__name__}: {exc}"
    if active is None:
        return evaluation, None, None
    try:
        compared = evaluation_for_snapshot(model_version=active, snapshot=snapshot)
    except Exception as exc:  # noqa: BLE001 - recorded as the decision's reason
        log.exception("Could not evaluate the active version %s", active.pk)
        return evaluation, None, f"{type(exc).__name__}: {exc}"
    return evaluation, compared, None


def _scored(evaluation: Evaluation | None) -> gate.Scored | None:
    if evaluation is None:
        return None
    return gate.Scored(n_cells=evaluation.n_cells, overall_accuracy=evaluation.overall_accuracy, vote=evaluation.vote)


# --- Scheduled retraining -----------------------------------------------------------------
def new_final_labels_count() -> int:
    """Train-split final labels that the newest model version's snapshot does not contain."""
    last = ModelVersion.objects.exclude(status=ModelVersion.Status.FAILED).order_by("-id").first()
    current = CellImage.objects.filter(split=Split.TRAIN, final_label__isnull=False,
                                       final_label__is_abstain=False).exclude(source="field")
    if last is None:
        return current.count()
    known = {(row[0], row[2]) for row in last.snapshot.get("items", [])}
    return sum(1 for pk, code in current.values_list("pk", "final_label__code") if (pk, code) not in known)


def retrain_periodic_task():
    """The beat entry (django-celery-beat), created by a migration; recreated if someone deleted it."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    task = PeriodicTask.objects.filter(name=RETRAIN_TASK_NAME).select_related("crontab").first()
    if task is None:
        crontab, _ = CrontabSchedule.objects.get_or_create(minute="0", hour="2", day_of_week="*", day_of_month="*",
                                                           month_of_year="*", timezone=settings.TIME_ZONE)
        task = PeriodicTask.objects.create(name=RETRAIN_TASK_NAME, task=RETRAIN_TASK, crontab=crontab, enabled=True)
    return task


def retrain_schedule_update(*, actor, hour: int, minute: int, enabled: bool, min_new_labels: int):
    """Change when the nightly retraining runs, whether it runs, and how many new labels it needs. Audited."""
    from django_celery_beat.models import CrontabSchedule

    errors = {}
    if not (0 <= int(hour) <= 23):
        errors["hour"] = "The hour must be between 0 and 23."
    if not (0 <= int(minute) <= 59):
        errors["minute"] = "The minute must be between 0 and 59."
    if not (1 <= int(min_new_labels) <= 1_000_000):
        errors["min_new_labels"] = "The number of new labels must be between 1 and 1,000,000."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        task = retrain_periodic_task()
        lab = LabSettings.objects.select_for_update().get(pk=LabSettings.get().pk)
        before = {"hour": task.crontab.hour, "minute": task.crontab.minute, "enabled": task.enabled,
                  "min_new_labels": lab.retrain_min_new_labels}
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=str(int(minute)), hour=str(int(hour)), day_of_week="*", day_of_month="*", month_of_year="*",
            timezone=settings.TIME_ZONE,
        )
        task.crontab = crontab
        task.enabled = bool(enabled)
        task.save()
        lab.retrain_min_new_labels = int(min_new_labels)
        lab.save(update_fields=["retrain_min_new_labels"])
        after = {"hour": int(hour), "minute": int(minute), "enabled": bool(enabled), "min_new_labels": int(min_new_labels)}
        audit_record(actor=actor, action=AuditAction.SCHEDULE_RETRAIN, target=("PeriodicTask", task.pk), before=before, after=after)
    return task


def promotion_gate_update(*, actor, min_heldout_per_class: int, min_heldout_total: int, margin: float) -> LabSettings:
    """Change what the promotion gate needs before it decides on its own (held-out cells per class and
    in total) and the largest sensitivity drop it allows (a fraction). Audited."""
    errors = {}
    if not 1 <= int(min_heldout_per_class) <= 100_000:
        errors["min_heldout_per_class"] = "Between 1 and 100,000 cells."
    if not 1 <= int(min_heldout_total) <= 1_000_000:
        errors["min_heldout_total"] = "Between 1 and 1,000,000 cells."
    if not 0.0 <= float(margin) <= 1.0:
        errors["margin"] = "Between 0 and 100 percentage points."
    if errors:
        raise ValidationError(errors)
    lab, _ = lab_settings_change(actor=actor, action=AuditAction.SETTINGS_PROMOTION_GATE, after=lambda lab: {
        "gate_min_heldout_per_class": int(min_heldout_per_class), "gate_min_heldout_total": int(min_heldout_total),
        "promotion_margin": float(margin)})
    return lab


def retrain_if_due() -> TrainingRun | None:
    """Beat: start a training run when enough new final labels exist and nothing is training."""

    needed = LabSettings.get().retrain_min_new_labels
    new = new_final_labels_count()
    if new < needed:
        log.info("Nightly retraining skipped: %s new final labels, %s needed.", new, needed)
        return None
    if training_run_current() is not None:
        log.info("Nightly retraining skipped: a training run is already queued or running.")
        return None
    try:
        return training_run_start(user=None, ensemble=settings.CLASSIFIER_DEFAULT_ENSEMBLE, mode="default",
                                  trigger="schedule")
    except TrainingBusy:
        return None
