"""What the training page's progress bar (and the API) shows for a training run."""
from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from .ml.ensembles import ENSEMBLES
from .models import ModelVersion, TrainingRun

STAGE_TEXT = {
    "queued": "Waiting for the training worker",
    "snapshot": "Freezing the training labels",
    "featurising": "Computing features",
    "training": "Training",
    "calibrating": "Calibrating the vote",
    "checking_precision": "Checking reduced precision",
    "saving": "Saving the checkpoint",
    "evaluating": "Evaluating on the held-out cells (promotion gate)",
    "done": "Done",
    "cancelled": "Cancelled",
    "failed": "Failed",
}


def _backbones(run: TrainingRun) -> list[str]:
    return list(ENSEMBLES.get(run.ensemble, []))


def training_result(version: ModelVersion | None) -> dict | None:
    """What a finished run made, from its version's metrics and history: per backbone the epoch
    kept (the best on validation) with its training loss, validation loss and validation accuracy,
    the epochs run, and the ensemble's vote on the validation cells. None without a version."""
    if version is None:
        return None
    history = list(version.history or [])
    metrics = version.metrics or {}
    rows = []
    for b in version.backbones or []:
        records = [h for h in history if h.get("backbone") == b]
        kept_epoch = ((metrics.get("per_backbone") or {}).get(b) or {}).get("best_epoch")
        kept = next((h for h in reversed(records) if h.get("epoch") == kept_epoch), None) or {}
        rows.append({"backbone": b, "epoch": kept_epoch, "epochs_run": len(records), "loss": kept.get("loss"),
                     "val_loss": kept.get("val_loss"), "val_accuracy": kept.get("val_accuracy")})
    return {"backbones": rows, "val_accuracy_vote": metrics.get("val_accuracy_majority"),
            "n_train": metrics.get("n_train"), "n_val": metrics.get("n_val")}


def _last_epoch(version: ModelVersion | None) -> dict:
    """The last epoch record of a finished run (what its progress showed last): the backbone, the
    epoch, its training loss and validation accuracy."""
    history = list(version.history or []) if version is not None else []
    last = next((h for h in reversed(history) if "epoch" in h), None)
    if last is None:
        return {}
    return {"backbone": last.get("backbone"), "epoch": last.get("epoch"), "epochs": last.get("epochs"),
            "loss": last.get("loss"), "val_accuracy": last.get("val_accuracy")}


def training_run_status(run: TrainingRun) -> dict:
    """Status, stage, a percentage and the figures of the latest progress report (for a finished
    run, of its last epoch, and what it made: :func:`training_result`)."""
    p = dict(run.progress or {})
    version = run.model_version if run.model_version_id else None
    if run.status == TrainingRun.Status.SUCCEEDED and "epoch" not in p:
        p.update(_last_epoch(version))  # the run's progress ends at "done", without the figures
    stage = p.get("stage") or run.status
    if stage == "done" and run.status == TrainingRun.Status.RUNNING:
        stage = "saving"  # the library has finished; the run is not registered yet (the page keeps polling)
    backbones = _backbones(run)
    n_b = max(len(backbones), 1)
    b = p.get("backbone")
    bi = backbones.index(b) if b in backbones else 0
    percent = 0.0
    if stage == "featurising" and p.get("total"):
        percent = 50.0 * (bi + p.get("done", 0) / p["total"]) / n_b
    elif stage == "training" and p.get("epochs"):
        percent = 50.0 + 45.0 * (bi + p.get("epoch", 0) / p["epochs"]) / n_b
    elif stage in ("calibrating", "checking_precision", "saving"):
        percent = 96.0
    gate = None
    if run.status == TrainingRun.Status.SUCCEEDED:
        decision = run.model_version.gate_decisions.first() if run.model_version_id else None
        if decision is not None:
            gate = {"outcome": decision.outcome, "label": decision.get_outcome_display(), "reasons": decision.reasons,
                    "activated": decision.activated, "evaluation": decision.evaluation_id,
                    "evaluation_url": reverse("reports:evaluation_detail", args=[decision.evaluation_id])
                    if decision.evaluation_id else None}
            stage, percent = "done", 100.0
        elif run.finished_at and (timezone.now() - run.finished_at).total_seconds() > 3600:
            stage, percent = "done", 100.0
        else:
            stage, percent = "evaluating", 98.0
    elif run.status == TrainingRun.Status.FAILED:
        stage = "failed"
    elif run.status == TrainingRun.Status.CANCELLED:
        stage = "cancelled"
    finished = stage in ("done", "failed", "cancelled")
    text = STAGE_TEXT.get(stage, stage)
    if stage == "featurising" and p.get("total"):
        text = f"Computing features: {b} {p.get('done', 0)}/{p['total']} images"
    elif stage == "training" and p.get("epochs"):
        text = f"Training {b}: epoch {p.get('epoch')}/{p.get('epochs')}"
    return {
        "id": run.pk,
        "status": run.status,
        "stage": stage,
        "text": text,
        "percent": round(percent, 1),
        "finished": finished,
        "ensemble": run.ensemble,
        "mode": run.mode,
        "epochs": run.epochs,
        "backbone": b,
        "backbone_index": bi + 1 if b in backbones else None,
        "n_backbones": len(backbones),
        "done": p.get("done"),
        "total": p.get("total"),
        "epoch": p.get("epoch"),
        "epochs_total": p.get("epochs"),
        "loss": p.get("loss"),
        "val_accuracy": p.get("val_accuracy"),
        "cancel_requested": run.cancel_requested,
        "error": run.error,
        "model_version": run.model_version_id,
        "result": training_result(version) if run.status == TrainingRun.Status.SUCCEEDED else None,
        "gate": gate,
        "retry_of": run.retry_of_id,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
