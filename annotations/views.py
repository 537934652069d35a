from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpResponseBadRequest,
    HttpResponseNotModified,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from classifier.models import Prediction
from competency.exam import exam_image_ids
from classifier.selectors import model_version_active
from leukoportal.errors import error_text
from leukoportal.forms import form_errors_text, form_posted, form_save
from leukoportal.roles import LAB_ADMIN, LABELLER, REVIEWER, has_role, role_required

from . import selectors, services
from .forms import (
    AdjudicationForm,
    AgreementFilterForm,
    AuditFilterForm,
    CellClassForm,
    LabelForm,
    LabSettingsForm,
    SplitMoveForm,
    UploadForm,
)
from .models import CellClass, CellImage, LabSettings, Split


def _uploaded_files(request):
    for f in request.FILES.getlist("files") + request.FILES.getlist("file"):
        yield f


@role_required(LABELLER)
@require_http_methods(["GET", "POST"])
def upload(request):
    """Many images and/or zip archives; answers JSON to the page's script, HTML otherwise."""
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    form = UploadForm(request.POST or None, initial={"split": Split.TRAIN})
    page = {"form": form, "can_choose_split": services.upload_split_allowed(user=request.user, split=Split.HELDOUT)}
    if request.method == "GET":
        return render(request, "annotations/upload.html", page)

    def fail(message, status=400):
        if wants_json:
            return JsonResponse({"error": message}, status=status)
        messages.error(request, message)
        return render(request, "annotations/upload.html", page, status=status)

    if not form.is_valid():
        return fail(form_errors_text(form))
    split = form.cleaned_data["split"]
    try:
        services.upload_split_check(user=request.user, split=split)
    except PermissionDenied as exc:
        return fail(str(exc), 403)
    files = list(_uploaded_files(request))
    if not files:
        return fail("Choose at least one image or zip archive.")
    try:
        results = services.uploads_store(files=files, uploaded_by=request.user, channel="browser", split=split,
                                         sample_code=form.cleaned_data["sample_code"],
                                         acquisition_source=form.cleaned_data["acquisition_source"])
    except ValidationError as exc:  # the source was deactivated since the page was drawn
        return fail(error_text(exc))
    if wants_json:
        return JsonResponse(results)
    return render(request, "annotations/upload_summary.html", {"results": results})


@role_required(LABELLER)
def image_list(request):
    split = request.GET.get("split") or None
    if split and split not in Split.values:
        return HttpResponseBadRequest("Unknown split.")
    page = Paginator(selectors.images_list(split=split), 48).get_page(request.GET.get("page"))
    return render(request, "annotations/image_list.html", {"page": page, "split": split,
                                                           "in_test": exam_image_ids(request.user)})


@role_required(LABELLER)
def image_detail(request, pk: int):
    image = get_object_or_404(CellImage.objects.select_related("final_label", "uploaded_by"), pk=pk)
    lab = LabSettings.get()
    hide_model = lab.hides_model_call(image=image, user=request.user)
    predictions = Prediction.objects.none() if hide_model else Prediction.objects.filter(image=image)
    in_test = lab.hides_final_label(image=image, user=request.user)
    return render(
        request,
        "annotations/image_detail.html",
        {
            "image": image,
            "history": selectors.image_history_for(image=image, user=request.user),
            "in_test": in_test,
            "predictions": predictions.select_related("model_version").order_by("-id"),
            "names": selectors.class_names(),
            "blind": hide_model,
            "readings_hidden": lab.hides_other_readings(image=image, user=request.user),
            "label_url": _label_cell_url(image.pk, ""),
            "split_form": SplitMoveForm(initial={"split": image.split}),
            "can_move": has_role(request.user, LAB_ADMIN),
        },
    )


@role_required(LABELLER)
def image_file(request, pk: int):
    image = get_object_or_404(CellImage, pk=pk)
    response = FileResponse(selectors.image_file_open(image=image), content_type="image/png")
    response["Cache-Control"] = "private, max-age=31536000, immutable"  # content-addressed
    response["ETag"] = f'"{image.sha256}"'
    return response


@role_required(LAB_ADMIN)
@require_POST
def image_split_move(request, pk: int):
    image = get_object_or_404(CellImage, pk=pk)
    form = SplitMoveForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Unknown split.")
    services.image_split_move(image=image, actor=request.user, split=form.cleaned_data["split"])
    messages.success(request, f"Image {image.pk} moved to {form.cleaned_data['split']}.")
    return redirect("annotations:image_detail", pk=image.pk)


@role_required(LAB_ADMIN)
def audit_log(request):
    form = AuditFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        return render(request, "annotations/audit_log.html", {"form": form, "page": None}, status=400)
    filters = {k: v for k, v in (form.cleaned_data if form.is_bound else {}).items() if v}
    events = selectors.audit_events(**filters)
    held_back = exam_image_ids(request.user)  # a lab admin sitting a proficiency test: not its cells' readings
    if held_back:
        events = events.exclude(target_type="CellImage", target_id__in=[str(pk) for pk in held_back])
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "annotations/audit_log.html", {"form": form, "page": page, "query": query.urlencode()})


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def taxonomy(request):
    form = CellClassForm(request.POST or None)
    if request.method == "POST":
        code = request.POST.get("code", "")
        instance = CellClass.objects.filter(code=code).first()
        form = CellClassForm(request.POST, instance=instance)
        if form.is_valid() and form_save(form, lambda: services.cell_class_save(
                actor=request.user, **{k: form.cleaned_data[k] for k in
                                       ("code", "name", "hotkey", "display_order", "active", "is_leukocyte")})):
            messages.success(request, f"Saved {code}.")
            return redirect("annotations:taxonomy")
    return render(request, "annotations/taxonomy.html", {"classes": CellClass.objects.all(), "form": form})


# --- Labelling portal ----------------------------------------------------------------------
GRID_PAGE_SIZE = 48


def _label_classes() -> list[dict]:
    return _label_classes_and_names()[0]


def _label_classes_and_names() -> tuple[list[dict], dict[str, str]]:
    """The classes an expert labels with (active, not the abstention) in display order, and
    every class's name by code, from one query."""
    rows = list(CellClass.objects.order_by("display_order", "code").values("code", "name", "hotkey", "active", "is_abstain"))
    classes = [{k: r[k] for k in ("code", "name", "hotkey")} for r in rows if r["active"] and not r["is_abstain"]]
    return classes, {r["code"]: r["name"] for r in rows}


@role_required(LABELLER)
def label_index(request):
    """The four queues with how many cells each holds for this expert."""
    counts = selectors.labelling_queue_counts(user=request.user)
    queues = [{"name": k, "title": v, "count": counts[k]} for k, v in selectors.QUEUES.items()]
    return render(request, "annotations/label_index.html", {"queues": queues, "lab": LabSettings.get()})


@role_required(LABELLER)
def label_queue(request, queue: str):
    """A grid of cells labelled with one key each (labelling.js); every cell also links to its own page."""
    if queue not in selectors.QUEUES:
        raise Http404("Unknown queue.")
    lab = LabSettings.get()
    try:
        page_number = max(1, int(request.GET.get("page", 1)))
    except ValueError:
        return HttpResponseBadRequest("page must be a number.")
    # Only this queue is counted here (the other three are counted on the queue overview page).
    version = model_version_active()  # looked up once for the queue and the suggestions
    queryset = selectors.labelling_queue(user=request.user, queue=queue, lab=lab, version=version)
    total = queryset.count()
    start = (page_number - 1) * GRID_PAGE_SIZE
    cells = list(queryset.only("id", "split", "final_label")[start:start + GRID_PAGE_SIZE])
    classes, names = _label_classes_and_names()
    suggestions = selectors.suggestions_for(images=cells, user=request.user, lab=lab, version=version, names=names)
    return render(request, "annotations/label_grid.html", {
        "queue": queue,
        "queue_title": selectors.QUEUES[queue],
        "queues": [{"name": k, "title": v, "count": total if k == queue else None} for k, v in selectors.QUEUES.items()],
        "cells": [{"image": im, "suggestion": suggestions.get(im.pk),
                   "blind": lab.hides_model_call(image=im, user=request.user)} for im in cells],
        "n_cells": len(cells),
        "total": total,
        "page_number": page_number,
        "has_next": start + GRID_PAGE_SIZE < total,
        "classes": classes,
        "lab": lab,
    })


@role_required(LABELLER)
@require_http_methods(["GET", "POST"])
def label_cell(request, pk: int):
    """One cell, large and zoomable, with a form that works without JavaScript."""
    image = get_object_or_404(CellImage.objects.select_related("final_label"), pk=pk)
    queue = request.GET.get("queue") or request.POST.get("queue") or ""
    if queue and queue not in selectors.QUEUES:
        return HttpResponseBadRequest("Unknown queue.")
    lab = LabSettings.get()
    if LabSettings.hides_final_label(image=image, user=request.user):
        raise PermissionDenied("This cell is in a proficiency test open for you: answer it in the test.")
    mine = selectors.labels_current_of(user=request.user, image_ids=[image.pk]).get(image.pk)
    suggestion = selectors.suggestions_for(images=[image], user=request.user, lab=lab).get(image.pk)
    # Nothing is preselected on a cell the model referred: its best guess is not a call to confirm.
    accepted_call = suggestion.code if suggestion and not suggestion.abstained else None
    initial = {"cell_class": mine.cell_class.code if mine else accepted_call,
               "unsure": mine.unsure if mine else False,
               "model_version": suggestion.model_version_id if suggestion else None}
    form = LabelForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            cell_class = CellClass.objects.get(code=form.cleaned_data["cell_class"])
            try:
                services.label_submit_as_offered(
                    image=image, labeller=request.user, cell_class=cell_class,
                    unsure=form.cleaned_data["unsure"], model_version_id=form.cleaned_data.get("model_version"),
                )
            except services.LabelConflict as exc:
                messages.error(request, str(exc))
                status = 409
            except ValidationError as exc:
                form.add_error(None, exc)
                status = 400
            else:
                messages.success(request, f"Cell {image.pk}: {cell_class.name}{' (not sure)' if form.cleaned_data['unsure'] else ''}.")
                if queue:
                    following = selectors.labelling_queue(user=request.user, queue=queue, lab=lab).only("id").first()
                    if following is not None:
                        return redirect(_label_cell_url(following.pk, queue))
                    return redirect("annotations:label_queue", queue=queue)
                return redirect(_label_cell_url(image.pk, ""))
        else:
            status = 400
    return render(request, "annotations/label_cell.html", {
        "image": image, "form": form, "mine": mine, "suggestion": suggestion, "queue": queue,
        "classes": _label_classes(), "lab": lab, "blind": lab.hides_model_call(image=image, user=request.user),
    }, status=status)


def _label_cell_url(pk: int, queue: str) -> str:
    url = reverse("annotations:label_cell", args=[pk])
    return f"{url}?queue={queue}" if queue else url


@role_required(LABELLER)
def image_thumb(request, pk: int):
    """A small JPEG made once and kept under MEDIA_ROOT/thumbs/; cached by the browser for a year."""
    try:
        size = int(request.GET.get("s", 128))
    except ValueError:
        return HttpResponseBadRequest("s must be a number.")
    image = get_object_or_404(CellImage.objects.only("id", "sha256", "file"), pk=pk)
    etag = f'"{image.sha256}-{size}"'
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponseNotModified()
    else:
        try:
            path = services.image_thumbnail(image=image, size=size)
        except ValidationError as exc:
            return HttpResponseBadRequest(error_text(exc))
        except FileNotFoundError:
            raise Http404("The image file is missing.") from None
        response = FileResponse(path.open("rb"), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=31536000, immutable"  # content-addressed
    response["ETag"] = etag
    return response


# --- Review --------------------------------------------------------------------------------
REVIEW_PAGE_SIZE = 20


@role_required(REVIEWER)
def review_queue(request):
    """Disputed and 'not sure' cells with every expert's label side by side."""
    page = Paginator(selectors.adjudication_queue(user=request.user), REVIEW_PAGE_SIZE).get_page(request.GET.get("page"))
    lab = LabSettings.get()
    labels = selectors.labels_side_by_side(image_ids=[im.pk for im in page])
    calls = selectors.model_calls_latest(images=page, user=request.user, lab=lab)
    rows = [{"image": im, "labels": labels[im.pk], "model_call": calls.get(im.pk),
             "blind": lab.hides_model_call(image=im, user=request.user)} for im in page]
    return render(request, "annotations/review_queue.html", {
        "page": page, "rows": rows, "classes": _label_classes(), "form": AdjudicationForm(),
    })


@role_required(REVIEWER)
@require_POST
def review_decide(request, pk: int):
    image = get_object_or_404(CellImage, pk=pk)
    form = AdjudicationForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Cell {image.pk}: {' '.join(form.errors.get('cell_class', [])) or form_errors_text(form)}")
        return redirect("annotations:review_queue")
    cell_class = CellClass.objects.get(code=form.cleaned_data["cell_class"])
    try:
        services.adjudication_submit(image=image, reviewer=request.user, cell_class=cell_class,
                                     note=form.cleaned_data["note"])
    except services.LabelConflict as exc:
        messages.error(request, f"Cell {image.pk}: {exc}")
    except ValidationError as exc:
        messages.error(request, f"Cell {image.pk}: {error_text(exc)}")
    else:
        messages.success(request, f"Cell {image.pk} is final: {cell_class.name}.")
    return redirect("annotations:review_queue")


@role_required(REVIEWER)
def agreement(request):
    """Cohen's kappa per pair of experts, Fleiss' kappa overall, per-class agreement, confusion."""
    from .agreement import agreement_report

    form = AgreementFilterForm(request.GET or None)
    report, status = None, 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        data = form.cleaned_data if form.is_bound else {}
        readings = selectors.agreement_readings(start=data.get("start"), end=data.get("end"),
                                                split=data.get("split") or None)
        order = list(CellClass.objects.order_by("display_order", "code").values_list("code", flat=True))
        report = agreement_report(readings, classes=order)
    matrix_rows = []
    if report and report.classes:
        matrix_rows = [{"code": c, "cells": row} for c, row in zip(report.classes, report.confusion)]
    return render(request, "annotations/agreement.html", {"form": form, "report": report, "matrix_rows": matrix_rows,
                                                          "names": selectors.class_names()}, status=status)


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def lab_settings(request):
    lab = LabSettings.get()
    form = LabSettingsForm(request.POST or None, initial={
        "labels_required_train": lab.labels_required_train,
        "labels_required_heldout": lab.labels_required_heldout,
        "blind_heldout": lab.blind_heldout,
        "slides_train": lab.slides_train,
        "two_step_release": lab.two_step_release,
    })
    if request.method == "POST":
        if form.is_valid() and form_save(form, lambda: services.lab_settings_update(actor=request.user,
                                                                                  **form.cleaned_data)):
            messages.success(request, "Labelling settings saved.")
            return redirect("annotations:lab_settings")
        return render(request, "annotations/lab_settings.html", {"form": form}, status=400)
    return render(request, "annotations/lab_settings.html", {"form": form})
