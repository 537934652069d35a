"""Pages of the competency room: build and assign tests (lab admins), take one in the labelling grid's
exam mode, the result with the missed cells, a person's history, the lab's summary, the PDF record and
the CSV export."""
import csv

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from annotations.audit import audit_record
from annotations.models import AuditAction
from annotations.selectors import cell_classes_active
from classifier.models import ModelVersion
from leukoportal.forms import form_errors_text, form_save
from leukoportal.roles import LAB_ADMIN, LABELLER, REVIEWER, has_role, role_required

from . import pdf, selectors, services
from .forms import AssignForm, ModelSitForm, SignOffForm, TestBuildForm, class_names
from .models import Assignment, ProficiencyTest


def _own_or_admin(request, pk: int) -> Assignment:
    assignment = get_object_or_404(Assignment.objects.select_related("test", "person", "signed_off_by"), pk=pk)
    if assignment.person_id != request.user.pk and not has_role(request.user, LAB_ADMIN):
        raise Http404("No such test of yours.")
    return assignment


@role_required(LABELLER)
def index(request):
    """The person's own tests (open first, then their history); the tests for lab admins."""
    mine = list(selectors.assignments_of(person=request.user))
    for a in mine:
        a.state = selectors.assignment_state(a)
    return render(request, "competency/index.html", {
        "open": [a for a in mine if a.is_open], "history": [a for a in mine if not a.is_open],
        "tests": selectors.tests_list() if has_role(request.user, LAB_ADMIN) else None})


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def test_build(request):
    include_heldout = request.POST.get("include_heldout") == "on" or request.GET.get("include_heldout") == "on"
    counts = selectors.decided_counts(include_heldout=include_heldout)
    form = TestBuildForm(request.POST or None, counts=counts)
    if request.method == "POST":
        test = form.is_valid() and form_save(form, lambda: services.test_create(actor=request.user,
                                                                                **form.service_kwargs()))
        if test:
            messages.success(request, f"{test} built: {test.cells.count()} cells (seed {test.seed}).")
            return redirect("competency:test", pk=test.pk)
    return render(request, "competency/build.html", {"form": form},
                  status=400 if request.method == "POST" else 200)


@role_required(LAB_ADMIN)
def test_detail(request, pk: int):
    test = get_object_or_404(ProficiencyTest, pk=pk)
    names = class_names()
    sitting = test.assignments.filter(person=request.user).exclude(status=Assignment.Status.SUBMITTED).exists()
    cells = [] if sitting else list(selectors.test_cells(test=test))  # a lab admin sitting it: no references
    by_class: dict[str, int] = {}
    for c in cells:
        by_class[c.reference.code] = by_class.get(c.reference.code, 0) + 1
    assignments = list(test.assignments.select_related("person"))
    for a in assignments:
        a.state = selectors.assignment_state(a)
    return render(request, "competency/test.html", {
        "test": test, "cells": cells, "names": names, "sitting": sitting,
        "by_class": sorted(by_class.items(), key=lambda kv: -kv[1]), "assignments": assignments,
        "assign_form": AssignForm(), "sittings": selectors.model_sittings(test=test),
        "versions": ModelVersion.objects.filter(status__in=[ModelVersion.Status.ACTIVE,
                                                            ModelVersion.Status.CANDIDATE]),
        "staff_results": [a for a in assignments if a.result]})


@role_required(LAB_ADMIN)
@require_POST
def test_assign(request, pk: int):
    test = get_object_or_404(ProficiencyTest, pk=pk)
    form = AssignForm(request.POST)
    made = form.is_valid() and form_save(form, lambda: services.test_assign(
        actor=request.user, test=test, people=list(form.cleaned_data["people"]), due_date=form.cleaned_data["due_date"]))
    if made:
        messages.success(request, f"Assigned to {', '.join(a.person.get_username() for a in made)}.")
    else:
        messages.error(request, form_errors_text(form))
    return redirect("competency:test", pk=test.pk)


@role_required(LAB_ADMIN)
@require_POST
def test_model_sit(request, pk: int):
    test = get_object_or_404(ProficiencyTest, pk=pk)
    form = ModelSitForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors_text(form))
        return redirect("competency:test", pk=test.pk)
    version = get_object_or_404(ModelVersion, pk=form.cleaned_data["model_version"])
    sitting = form_save(form, lambda: services.model_sit(actor=request.user, test=test, model_version=version))
    if sitting is None:
        messages.error(request, form_errors_text(form))
    elif sitting.result is None:
        messages.info(request, f"Model v{version.pk} is classifying the test's cells; sit it again in a moment.")
    else:
        messages.success(request, f"Model v{version.pk} sat the test: {sitting.result['agreement']:.1%}.")
    return redirect("competency:test", pk=test.pk)


@role_required(LAB_ADMIN)
@require_POST
def test_new_version(request, pk: int):
    test = get_object_or_404(ProficiencyTest, pk=pk)
    try:
        new = services.test_new_version(actor=request.user, test=test)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("competency:test", pk=test.pk)
    messages.success(request, f"{new} drawn (seed {new.seed}).")
    return redirect("competency:test", pk=new.pk)


@role_required(LABELLER)
def take(request, pk: int):
    """The labelling grid in exam mode: the same keys; no model call, no other reading, no reference."""
    assignment = get_object_or_404(Assignment.objects.select_related("test"), pk=pk, person=request.user)
    if not assignment.is_open:
        return redirect("competency:result", pk=assignment.pk)
    try:
        assignment = services.attempt_start(assignment=assignment, user=request.user)
    except services.CompetencyConflict:
        return redirect("competency:result", pk=assignment.pk)
    answers = {a.cell_id: a for a in assignment.answers.select_related("answer")}
    cells = []
    for c in selectors.test_cells(test=assignment.test):
        a = answers.get(c.pk)
        cells.append({"image": c.image, "position": c.position, "answer": a.answer.code if a and a.answer_id else "",
                      "unsure": bool(a and a.unsure), "seconds": a.seconds if a else 0.0})
    classes = [{"code": c.code, "name": c.name, "hotkey": c.hotkey}
               for c in cell_classes_active().filter(is_abstain=False)]
    return render(request, "competency/take.html", {
        "assignment": assignment, "cells": cells, "n_cells": len(cells), "classes": classes,
        "answered": sum(1 for c in cells if c["answer"] or c["unsure"])})


@role_required(LABELLER)
@require_POST
def submit(request, pk: int):
    assignment = get_object_or_404(Assignment, pk=pk, person=request.user)
    try:
        services.attempt_submit(assignment=assignment, user=request.user)
    except services.CompetencyConflict as exc:
        messages.error(request, str(exc))
    return redirect("competency:result", pk=assignment.pk)


def _review_rows(assignment: Assignment, names: dict) -> list[dict]:
    answers = {a.cell_id: a for a in assignment.answers.select_related("answer")}
    rows = []
    for c in selectors.test_cells(test=assignment.test):
        a = answers.get(c.pk)
        given = a.answer.code if a and a.answer_id else None
        unsure = bool(a and a.unsure)
        correct = given == c.reference.code and not unsure
        rows.append({"cell": c, "given": names.get(given, "—") if given else "—", "unsure": unsure,
                     "reference": names.get(c.reference.code), "correct": correct,
                     "seconds": a.seconds if a else None})
    return rows


def _matrix(result: dict, names: dict) -> dict:
    cols = [names.get(c, c) for c in result["matrix_labels"]]
    rows = [{"label": names.get(code, code), "counts": result["confusion"][i]} for i, code in enumerate(result["labels"])]
    return {"cols": cols, "rows": rows}


@role_required(LABELLER)
def result(request, pk: int):
    assignment = _own_or_admin(request, pk)
    if assignment.is_open:
        if assignment.person_id == request.user.pk:
            return redirect("competency:take", pk=assignment.pk)
        return render(request, "competency/result.html", {"assignment": assignment, "open": True})
    names = class_names()
    rows = _review_rows(assignment, names)
    return render(request, "competency/result.html", {
        "assignment": assignment, "r": assignment.result, "matrix": _matrix(assignment.result, names),
        "per_class": [{**p, "name": names.get(p["class"], p["class"])} for p in assignment.result["per_class"]],
        "missed": [row for row in rows if not row["correct"]], "sign_off_form": SignOffForm(),
        "can_sign": has_role(request.user, LAB_ADMIN) and not assignment.signed_off_at
        and assignment.person_id != request.user.pk})


@role_required(LAB_ADMIN)
@require_POST
def sign_off(request, pk: int):
    assignment = get_object_or_404(Assignment, pk=pk)
    form = SignOffForm(request.POST)
    if form.is_valid():
        try:
            services.attempt_sign_off(assignment=assignment, actor=request.user, note=form.cleaned_data["note"])
        except (services.CompetencyConflict, PermissionDenied) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "Record signed off.")
    return redirect("competency:result", pk=assignment.pk)


@role_required(LABELLER)
def result_pdf(request, pk: int):
    assignment = _own_or_admin(request, pk)
    if assignment.is_open:
        raise Http404("The record exists once the test is submitted.")
    body = pdf.attempt_pdf(assignment, names=class_names())
    response = HttpResponse(body, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="competency-{assignment.pk}.pdf"'
    return response


@role_required(LABELLER)
def person_history(request, username: str):
    """One person's results over time: their own, or anyone's for a lab admin."""
    if username != request.user.get_username() and not has_role(request.user, LAB_ADMIN):
        raise Http404("No such history of yours.")
    rows = list(Assignment.objects.filter(person__username=username).select_related("test", "person")
                .order_by("assigned_at"))
    for a in rows:
        a.state = selectors.assignment_state(a)
    return render(request, "competency/history.html", {"username": username, "rows": rows})


@role_required(REVIEWER)
def summary(request):
    names = class_names()
    s = selectors.lab_summary()
    for c in s["confusions"]:
        c["reference_name"], c["called_name"] = names.get(c["reference"], c["reference"]), names.get(c["called"], c["called"])
    return render(request, "competency/summary.html", {"s": s})


@role_required(LAB_ADMIN)
def export_csv(request):
    """Every assignment with its result, one row each (lab admins); the export is audited."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="competency.csv"'
    writer = csv.writer(response)
    writer.writerow(["assignment", "person", "test", "version", "assigned_at", "due_date", "state", "submitted_at",
                     "cells", "correct", "agreement", "ci_low", "ci_high", "kappa", "not_sure", "seconds_mean",
                     "passed", "reasons", "signed_off_by", "signed_off_at"])
    rows = list(selectors.assignments_all())
    for a in rows:
        r = a.result or {}
        ci = r.get("agreement_ci") or ["", ""]
        writer.writerow([a.pk, a.person.get_username(), a.test.name, a.test.version, a.assigned_at.isoformat(),
                         a.due_date.isoformat(), selectors.assignment_state(a),
                         a.submitted_at.isoformat() if a.submitted_at else "", r.get("n", ""), r.get("correct", ""),
                         r.get("agreement", ""), ci[0], ci[1], "" if r.get("kappa") is None else r["kappa"],
                         r.get("not_sure", ""), "" if r.get("seconds_mean") is None else r["seconds_mean"],
                         "" if a.passed is None else a.passed, "; ".join(r.get("reasons", [])),
                         a.signed_off_by.get_username() if a.signed_off_by_id else "",
                         a.signed_off_at.isoformat() if a.signed_off_at else ""])
    audit_record(actor=request.user, action=AuditAction.COMPETENCY_EXPORT, target=("competency", "csv"),
                 after={"rows": len(rows), "at": timezone.now().isoformat()})
    return response
