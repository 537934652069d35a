"""Model versions (promotion, rollback) and training from the browser. Thin views."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotations.models import LabSettings
from leukoportal.errors import call_with_messages, error_text
from leukoportal.forms import form_posted, form_save
from leukoportal.roles import LAB_ADMIN, REVIEWER, role_required
from reports import selectors as report_selectors
from reports.selectors import heldout_labelled_count, model_versions_overview
from reports.services import (
    new_final_labels_count,
    promotion_gate_update,
    retrain_periodic_task,
    retrain_schedule_update,
)

from . import services
from .forms import PromotionGateForm, ScheduleForm, TrainingForm
from .models import ModelVersion, TrainingRun
from .progress import training_run_status
from .selectors import model_version_active, model_version_switch_label, threshold_applied, training_run_current


@role_required(REVIEWER)
@require_GET
def versions(request):
    return render(request, "classifier/versions.html", {"overview": model_versions_overview(),
                                                        "active": model_version_active()})


def _version_switch(request, pk: int, *, rollback: bool):
    """Promotion and rollback alike: a confirmation page that shows the figures, then a POST with a
    ticked confirmation and a reason, which the service audits."""
    version = get_object_or_404(ModelVersion, pk=pk)
    active = model_version_active()
    label = model_version_switch_label(version=version, active=active)
    url_name = "classifier:version_rollback" if rollback else "classifier:version_promote"
    if request.method == "POST":
        if request.POST.get("confirm") != "yes":
            messages.error(request, f"Tick the confirmation box to {label[0].lower()}{label[1:]}.")
            return redirect(url_name, pk=version.pk)
        service = services.model_version_rollback if rollback else services.model_version_promote
        try:
            service(version=version, actor=request.user, reason=request.POST.get("reason", ""))
        except ValidationError as exc:
            messages.error(request, error_text(exc))
            return redirect(url_name, pk=version.pk)
        messages.success(request, f"v{version.pk} is now the active model"
                                  f"{f'; v{active.pk} is retired' if active else ''}. New cells are read by v{version.pk}; "
                                  "past predictions keep the version that made them.")
        return redirect("classifier:versions")
    evaluation = report_selectors.evaluation_latest(model_version=version)
    active_evaluation = report_selectors.evaluation_latest(model_version=active) if active else None
    comparison = (report_selectors.paired_comparison_of(evaluation, active_evaluation)
                  if evaluation and active_evaluation and active != version else {})
    return render(request, "classifier/promote_confirm.html", {
        "version": version, "active": active, "label": label, "rollback": rollback,
        "gate": report_selectors.gate_decision_latest(model_version=version),
        "evaluation": evaluation, "active_evaluation": active_evaluation, "comparison": comparison,
        "vote_worse": report_selectors.vote_worse_than_backbones(evaluation) if evaluation else [],
    })


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def version_promote(request, pk: int):
    """Explicit promotion of a candidate, whatever the gate said (confirmation, reason, audit)."""
    return _version_switch(request, pk, rollback=False)


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def version_rollback(request, pk: int):
    """A version that was active before becomes active again (confirmation, reason, audit)."""
    return _version_switch(request, pk, rollback=True)


def _schedule_initial() -> dict:
    task = retrain_periodic_task()
    return {"enabled": task.enabled, "hour": int(task.crontab.hour) if task.crontab.hour.isdigit() else 2,
            "minute": int(task.crontab.minute) if task.crontab.minute.isdigit() else 0,
            "min_new_labels": LabSettings.get().retrain_min_new_labels, "task": task}


@role_required(LAB_ADMIN)
@require_GET
def training(request):
    current = training_run_current()
    schedule = _schedule_initial()
    return render(request, "classifier/training.html", {
        "form": TrainingForm(initial={"ensemble": settings.CLASSIFIER_DEFAULT_ENSEMBLE, "mode": "default"}),
        "current": current,
        "current_status": training_run_status(current) if current else None,
        "runs": TrainingRun.objects.select_related("model_version", "created_by")[:20],
        "active": model_version_active(),
        "schedule": schedule,
        "new_labels": new_final_labels_count(),
        "lab": LabSettings.get(),
        "heldout_labelled": heldout_labelled_count(),
    })


# How the training services refuse to start a run: one is already running, or the options are wrong.
TRAINING_REFUSALS = (services.TrainingBusy, ValueError)


def _training_run_page(run: TrainingRun | None):
    """After starting a run: its page, or the training page when it was refused."""
    return redirect("classifier:training_run", pk=run.pk) if run else redirect("classifier:training")


@role_required(LAB_ADMIN)
@require_POST
def training_start(request):
    form = form_posted(request, TrainingForm)
    if form is None:
        return redirect("classifier:training")
    run = call_with_messages(
        request, lambda: services.training_run_start(user=request.user, trigger="admin", **form.cleaned_data),
        refusals=TRAINING_REFUSALS, success=lambda run: f"Training run {run.pk} started; this page follows it.")
    return _training_run_page(run)


@role_required(LAB_ADMIN)
@require_GET
def training_run(request, pk: int):
    run = get_object_or_404(TrainingRun.objects.select_related("model_version", "created_by"), pk=pk)
    threshold = threshold_applied(run.model_version) if run.model_version_id else None
    return render(request, "classifier/training_run.html", {"run": run, "status": training_run_status(run),
                                                            "threshold": threshold})


@role_required(LAB_ADMIN)
@require_GET
def training_progress(request, pk: int):
    """The small JSON the progress bar polls."""
    run = get_object_or_404(TrainingRun.objects.select_related("model_version"), pk=pk)
    response = JsonResponse(training_run_status(run))
    response["Cache-Control"] = "no-store"
    return response


@role_required(LAB_ADMIN)
@require_POST
def training_cancel(request, pk: int):
    run = get_object_or_404(TrainingRun, pk=pk)
    if run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
        messages.error(request, f"Training run {run.pk} is {run.status}; nothing to cancel.")
        return redirect("classifier:training_run", pk=run.pk)
    run = services.training_run_cancel(run=run, user=request.user)
    messages.success(request, f"Training run {run.pk}: cancellation requested.")
    return redirect("classifier:training_run", pk=run.pk)


@role_required(LAB_ADMIN)
@require_POST
def training_retry(request, pk: int):
    run = get_object_or_404(TrainingRun, pk=pk)
    new = call_with_messages(request, lambda: services.training_run_retry(run=run, user=request.user, trigger="admin"),
                             refusals=TRAINING_REFUSALS,
                             success=lambda new: f"Training run {new.pk} retries run {run.pk}.")
    return _training_run_page(new)


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def schedule(request):
    """The nightly retraining (django-celery-beat): time, on/off, and how many new labels it needs."""
    initial = _schedule_initial()
    form = ScheduleForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid() and form_save(
            form, lambda: retrain_schedule_update(actor=request.user, **form.cleaned_data)):
        messages.success(request, "Retraining schedule saved.")
        return redirect("classifier:schedule")
    status = 400 if request.method == "POST" else 200
    return render(request, "classifier/schedule.html", {"form": form, "task": initial["task"],
                                                        "new_labels": new_final_labels_count()}, status=status)


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def gate_settings(request):
    """What the promotion gate needs before it activates a new version on its own."""
    lab = LabSettings.get()
    form = PromotionGateForm(request.POST or None, initial={
        "min_heldout_per_class": lab.gate_min_heldout_per_class, "min_heldout_total": lab.gate_min_heldout_total,
        "margin_percent": round(100 * lab.promotion_margin, 3)})
    if request.method == "POST" and form.is_valid() and form_save(form, lambda: promotion_gate_update(
            actor=request.user, min_heldout_per_class=form.cleaned_data["min_heldout_per_class"],
            min_heldout_total=form.cleaned_data["min_heldout_total"], margin=form.cleaned_data["margin_percent"] / 100)):
        messages.success(request, "Promotion gate saved.")
        return redirect("classifier:gate_settings")
    status = 400 if request.method == "POST" else 200
    return render(request, "classifier/gate_settings.html", {"form": form}, status=status)
