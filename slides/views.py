"""Slide pages: list and create, detail with progress and differential, verification, sign-off,
reports (printable, CSV, FHIR) and the lab's reference intervals. Thin: validate, call a service."""
import csv
import json
from collections import defaultdict
from functools import wraps

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from annotations.models import LabSettings
from annotations.selectors import cell_classes_active, class_names
from leukoportal.errors import call_with_messages, error_text, refusal_text
from leukoportal.forms import form_errors_text, form_posted, form_save
from leukoportal.roles import LAB_ADMIN, LABELLER, REVIEWER, has_role, role_required
from lis import selectors as lis_selectors

from . import selectors, services
from .exports import HL7_CONTENT_TYPE, fhir_report, hl7_report, report_csv_rows
from .forms import (
    CorrectionForm,
    ReferenceIntervalForm,
    ReleaseForm,
    ReleaseReturnForm,
    SignForm,
    SlideCreateForm,
    SlideUpdateForm,
)
from .models import ReferenceInterval, Slide, SlideCell
from .morphology.selectors import slide_red_cell_form
from .platelets.selectors import slide_platelet_fields


def _wants_json(request) -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


@role_required(LABELLER)
@require_http_methods(["GET", "POST"])
def slide_list(request):
    form = SlideCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        slide = form_save(form, lambda: services.slide_create(created_by=request.user, **form.cleaned_data))
        if slide:
            messages.success(request, f"Slide {slide.code} created: add its fields.")
            return redirect("slides:detail", pk=slide.pk)
    status = request.GET.get("status") or None
    if status and status not in Slide.Status.values:
        status = None
    page = Paginator(selectors.slides_list(status=status, code=request.GET.get("q") or None), 50).get_page(
        request.GET.get("page"))
    return render(request, "slides/list.html", {"form": form, "page": page, "status": status,
                                                "statuses": Slide.Status.choices},
                  status=400 if request.method == "POST" else 200)


@role_required(LABELLER)
def slide_detail(request, pk: int):
    slide = get_object_or_404(Slide.objects.select_related("created_by", "signed_by", "model_version"), pk=pk)
    cells_by_field = defaultdict(list)  # one query for every box of every field
    boxed = list(slide.cells.filter(field__isnull=False, x0__isnull=False).select_related("final_class", "image"))
    for c in boxed:
        cells_by_field[c.field_id].append(c)
    fields = []
    for f in slide.fields.select_related("image"):
        boxes = [
            {"cell": c, "left": 100 * c.x0 / f.image.width, "top": 100 * c.y0 / f.image.height,
             "width": 100 * (c.x1 - c.x0) / f.image.width, "height": 100 * (c.y1 - c.y0) / f.image.height}
            for c in cells_by_field[f.pk]
        ]
        fields.append({"field": f, "boxes": boxes})
    processing = slide.task_state in (Slide.TaskState.QUEUED, Slide.TaskState.RUNNING)
    lis_messages = lis_selectors.slide_delivery(slide_id=slide.pk)
    withheld = selectors.slide_totals_withheld(slide=slide, user=request.user)
    return render(request, "slides/detail.html", {
        "slide": slide,
        "fields": fields,
        "blind": selectors.slide_cells_blind(cells=boxed, user=request.user),
        "diff": selectors.slide_differential(slide=slide) if not (processing or withheld) else None,
        "diff_withheld": withheld,
        "processing": processing,
        "update_form": SlideUpdateForm(initial={"wbc_count": slide.wbc_count, "target_count": slide.target_count,
                                                "notes": slide.notes, "microns_per_pixel": slide.microns_per_pixel}),
        "release": selectors.slide_report_release(slide=slide) if slide.is_signed else None,
        "correction_form": CorrectionForm(),
        "versions": selectors.slide_versions(slide=slide),
        "can_review": has_role(request.user, REVIEWER),
        "lis_messages": lis_messages,
        "lis_state": lis_selectors.delivery_summary(lis_messages),
    })


@role_required(LABELLER)
@require_POST
def slide_upload(request, pk: int):
    slide = get_object_or_404(Slide, pk=pk)
    files = request.FILES.getlist("files")
    if not files:
        message = "Choose at least one image."
        if _wants_json(request):
            return JsonResponse({"error": message}, status=400)
        messages.error(request, message)
        return redirect("slides:detail", pk=pk)
    try:
        result = services.slide_images_add(slide=slide, files=[(f.name, f.read()) for f in files],
                                           uploaded_by=request.user)
    except services.SlideLocked as exc:
        if _wants_json(request):
            return JsonResponse({"error": str(exc)}, status=409)
        messages.error(request, str(exc))
        return redirect("slides:detail", pk=pk)
    if _wants_json(request):
        return JsonResponse(result, status=201 if result["stored"] else 400)
    if result["stored"]:
        messages.success(request, f"{len(result['stored'])} image(s) stored; finding and classifying the cells.")
    for r in result["refused"]:
        messages.error(request, f"{r['name']}: {r['reason']}")
    return redirect("slides:detail", pk=pk)


def _slide_form_post(form_class: type[forms.Form], *, invalid_message: str = ""):
    """A POST of a form about one slide: the view gets the slide and the valid form; an invalid
    form's errors (or ``invalid_message``) go to the messages and the slide's page answers."""
    def decorator(view):
        @wraps(view)
        @require_POST
        def wrapped(request, pk: int):
            slide = get_object_or_404(Slide, pk=pk)
            form = form_posted(request, form_class, invalid_message=invalid_message)
            if form is None:
                return redirect("slides:detail", pk=pk)
            return view(request, slide, form)
        return wrapped
    return decorator


@role_required(LABELLER)
@_slide_form_post(SlideUpdateForm)
def slide_update(request, slide: Slide, form: SlideUpdateForm):
    call_with_messages(request, lambda: services.slide_update(slide=slide, actor=request.user, **form.cleaned_data),
                       refusals=services.EDIT_REFUSALS, success=lambda _: "Saved.")
    return redirect("slides:detail", pk=slide.pk)


def _live(slide: Slide) -> dict:
    slide.refresh_from_db()
    body = {"status": slide.status, "task_state": slide.task_state, "progress": slide.progress, "error": slide.error}
    if slide.task_state not in (Slide.TaskState.QUEUED, Slide.TaskState.RUNNING):
        diff = selectors.slide_differential(slide=slide)
        body["differential"] = diff
        body["html"] = render_to_string("slides/_differential.html", {"diff": diff})
        body["sign_checklist_html"] = render_to_string("slides/_sign_checklist.html", {"diff": diff})
    return body


@role_required(REVIEWER)
def slide_verify(request, pk: int):
    slide = get_object_or_404(Slide, pk=pk)
    diff = selectors.slide_differential(slide=slide)
    cells = list(selectors.slide_cells(slide=slide))
    blind = selectors.slide_cells_blind(cells=cells, user=request.user)
    return render(request, "slides/verify.html", {
        "slide": slide,
        "names": class_names(),
        "groups": selectors.slide_groups(slide=slide, blind=blind, cells=cells),
        "blind": blind,
        "diff": diff,
        "platelet_fields": slide_platelet_fields(slide=slide) if diff.get("platelets") else [],
        "red_cells": slide_red_cell_form(slide=slide),
        "targets": [c for c in cell_classes_active() if not c.is_abstain],
        "locked": slide.is_signed or slide.status == Slide.Status.AWAITING_RELEASE
                  or slide.task_state != Slide.TaskState.DONE,
        "two_step": LabSettings.get().two_step_release,
    })


@role_required(REVIEWER)
@require_POST
def cell_reclassify(request, pk: int, cell_pk: int):
    cell = get_object_or_404(SlideCell, pk=cell_pk, slide_id=pk)
    target = request.POST.get("target", "")
    try:
        cell = services.slide_cell_reclassify(cell=cell, actor=request.user, target=target)
    except services.SlideLocked as exc:
        if _wants_json(request):
            return JsonResponse({"error": str(exc)}, status=409)
        messages.error(request, str(exc))
        return redirect("slides:verify", pk=pk)
    except ValidationError as exc:
        if _wants_json(request):
            return JsonResponse({"error": error_text(exc)}, status=400)
        messages.error(request, error_text(exc))
        return redirect("slides:verify", pk=pk)
    if _wants_json(request):
        body = _live(cell.slide)
        body["cell"] = {"id": cell.pk, "class": cell.final_class.code if cell.final_class else None,
                        "status": cell.status, "verified": cell.verified,
                        "verified_by": cell.changed_by.get_username() if cell.changed_by_id else None}
        return JsonResponse(body)
    return redirect(reverse("slides:verify", kwargs={"pk": pk}) + f"#cell-{cell.pk}")


@role_required(REVIEWER)
@require_POST
def cells_confirm(request, pk: int):
    """Confirm, as they are, the unverified counted cells of one class group."""
    slide = get_object_or_404(Slide, pk=pk)
    code = request.POST.get("code", "")
    call_with_messages(request, lambda: services.slide_cells_confirm(slide=slide, actor=request.user, code=code),
                       refusals=services.EDIT_REFUSALS, success=lambda n: f"{n} cell(s) confirmed.")
    return redirect("slides:verify", pk=pk)


@role_required(REVIEWER)
@require_POST
def slide_sign(request, pk: int):
    """Sign (or, with the lab's two-step release on, submit for release); while warnings stand
    (selectors.slide_sign_warnings) a reason is required, and a request without one gets the
    confirmation step: the warnings and a field for the reason."""
    slide = get_object_or_404(Slide, pk=pk)
    form = SignForm(request.POST)
    if not form.is_valid():  # too long a reason or comment: nothing is signed
        messages.error(request, form_errors_text(form))
        return redirect("slides:verify", pk=pk)
    data = form.cleaned_data
    two_step = LabSettings.get().two_step_release
    sign = services.slide_submit if two_step else services.slide_sign
    try:
        sign(slide=slide, actor=request.user, reason=data.get("reason", ""), comment=data.get("comment", ""))
    except services.SignatureNeedsReason as exc:
        return render(request, "slides/sign_confirm.html", {
            "slide": slide, "warnings": exc.warnings, "form": form, "two_step": two_step,
            "diff": selectors.slide_differential(slide=slide, signing=True)}, status=400)
    except (services.SlideLocked, services.SlideNotReady, ValidationError) as exc:
        messages.error(request, refusal_text(exc))
        return redirect("slides:verify", pk=pk)
    if two_step:
        messages.success(request, f"Slide {slide.code} v{slide.version} submitted: a second reviewer releases it.")
        return redirect("slides:verify", pk=pk)
    messages.success(request, f"Slide {slide.code} v{slide.version} signed.")
    return redirect("slides:report", pk=pk)


@role_required(REVIEWER)
@_slide_form_post(ReleaseForm)
def slide_release(request, slide: Slide, form: ReleaseForm):
    """Two-step release: a second reviewer releases (signs) a submitted slide."""
    released = call_with_messages(
        request, lambda: services.slide_release(slide=slide, actor=request.user, comment=form.cleaned_data["comment"]),
        refusals=(services.SlideLocked, services.SlideNotReady, ValidationError),
        success=lambda s: f"Slide {s.code} v{s.version} released.")
    return redirect("slides:report", pk=slide.pk) if released else redirect("slides:verify", pk=slide.pk)


@role_required(REVIEWER)
@_slide_form_post(ReleaseReturnForm, invalid_message="Say why the slide goes back to verification.")
def slide_release_return(request, slide: Slide, form: ReleaseReturnForm):
    call_with_messages(
        request, lambda: services.slide_release_return(slide=slide, actor=request.user,
                                                       reason=form.cleaned_data["reason"]),
        refusals=services.EDIT_REFUSALS, success=lambda s: f"Slide {s.code} v{s.version} is back in verification.")
    return redirect("slides:verify", pk=slide.pk)


@role_required(REVIEWER)
@_slide_form_post(CorrectionForm, invalid_message="Say why the signed report is corrected.")
def slide_correct(request, slide: Slide, form: CorrectionForm):
    new = call_with_messages(
        request, lambda: services.slide_correct(slide=slide, actor=request.user, reason=form.cleaned_data["reason"]),
        refusals=services.EDIT_REFUSALS,
        success=lambda new: f"Version {new.version} created from the signed version {slide.version}.")
    return redirect("slides:verify", pk=new.pk) if new else redirect("slides:detail", pk=slide.pk)


@role_required(REVIEWER)
@require_POST
def slide_retry(request, pk: int):
    slide = get_object_or_404(Slide, pk=pk)
    call_with_messages(request, lambda: services.slide_processing_retry(slide=slide, actor=request.user),
                       refusals=(services.SlideLocked,))
    return redirect("slides:detail", pk=pk)


# --- Reports (signed slides only) ----------------------------------------------------------
def _signed_report(view):
    """A view of the signed report: it gets the slide, and a 409 answers while the slide is not signed."""
    @wraps(view)
    def wrapped(request, pk: int):
        slide = get_object_or_404(Slide.objects.select_related("signed_by"), pk=pk)
        refusal = selectors.slide_report_refusal(slide=slide)
        if refusal:
            return HttpResponse(refusal, status=409, content_type="text/plain")
        withheld = selectors.slide_totals_withheld(slide=slide, user=request.user)
        if withheld:
            return HttpResponse(withheld, status=403, content_type="text/plain")
        return view(request, slide)
    return wrapped


def _report_download(slide: Slide, content, *, content_type: str, extension: str) -> HttpResponse:
    """The signed report as a file to save, named after the slide and its version."""
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="differential-{slide.pk}-v{slide.version}.{extension}"'
    return response


@role_required(LABELLER)
@_signed_report
def slide_report(request, slide: Slide):
    return render(request, "slides/report.html", {"slide": slide, "report": slide.report,
                                                  "verification": selectors.slide_verification_text(slide=slide),
                                                  "release": selectors.slide_report_release(slide=slide),
                                                  "versions": selectors.slide_versions(slide=slide)})


@role_required(LABELLER)
@_signed_report
def slide_report_csv(request, slide: Slide):
    response = _report_download(slide, b"", content_type="text/csv; charset=utf-8", extension="csv")
    csv.writer(response).writerows(report_csv_rows(slide))
    return response


@role_required(LABELLER)
@_signed_report
def slide_report_pdf(request, slide: Slide):
    from .pdf import report_pdf

    return _report_download(slide, report_pdf(slide, release=selectors.slide_report_release(slide=slide)),
                            content_type="application/pdf", extension="pdf")


@role_required(LABELLER)
@_signed_report
def slide_report_fhir(request, slide: Slide):
    return _report_download(slide, json.dumps(fhir_report(slide), indent=2), content_type="application/fhir+json",
                            extension="fhir.json")


@role_required(LABELLER)
@_signed_report
def slide_report_hl7(request, slide: Slide):
    return _report_download(slide, hl7_report(slide).encode("utf-8"), content_type=HL7_CONTENT_TYPE,
                            extension="hl7")


# --- Reference intervals (lab admins) ------------------------------------------------------
@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def reference_intervals(request):
    edit_id = request.GET.get("edit")
    edit = ReferenceInterval.objects.filter(pk=edit_id).first() if edit_id and edit_id.isdigit() else None
    form = ReferenceIntervalForm(instance=edit)
    if request.method == "POST":
        pk = request.POST.get("id", "")
        edit = ReferenceInterval.objects.filter(pk=pk).first() if pk.isdigit() else None
        form = ReferenceIntervalForm(request.POST, instance=edit)
        if form.is_valid():
            try:
                services.reference_interval_save(actor=request.user, interval=edit, **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, error_text(exc))
            else:
                messages.success(request, "Reference interval saved.")
                return redirect("slides:reference_intervals")
    return render(request, "slides/reference_intervals.html", {
        "intervals": ReferenceInterval.objects.all(), "form": form, "edit": edit,
    }, status=400 if request.method == "POST" else 200)
