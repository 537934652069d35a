from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from leukoportal.roles import LAB_ADMIN, LABELLER, has_role, role_required

from . import selectors, services
from .archives import ArchiveRejected
from .forms import CellClassForm, SplitMoveForm, UploadForm
from .models import AuditEvent, CellClass, CellImage, Split


def _uploaded_files(request):
    for f in request.FILES.getlist("files") + request.FILES.getlist("file"):
        yield f


@role_required(LABELLER)
@require_http_methods(["GET", "POST"])
def upload(request):
    """Many images and/or zip archives; answers JSON to the page's script, HTML otherwise."""
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    form = UploadForm(request.POST or None, initial={"split": Split.TRAIN})
    if request.method == "GET":
        return render(request, "annotations/upload.html", {"form": form, "can_choose_split": has_role(request.user, LAB_ADMIN)})

    def fail(message, status=400):
        if wants_json:
            return JsonResponse({"error": message}, status=status)
        messages.error(request, message)
        return render(request, "annotations/upload.html", {"form": form, "can_choose_split": has_role(request.user, LAB_ADMIN)}, status=status)

    if not form.is_valid():
        return fail("; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    split = form.cleaned_data["split"]
    if split != Split.TRAIN and not has_role(request.user, LAB_ADMIN):
        return fail("Only a lab admin can upload to the held-out set.", 403)
    files = list(_uploaded_files(request))
    if not files:
        return fail("Choose at least one image or zip archive.")
    results = {"stored": [], "duplicates": [], "refused": [], "batches": []}
    plain = []
    for f in files:
        if f.name.lower().endswith(".zip"):
            try:
                summary = services.zip_upload(fileobj=f, uploaded_by=request.user, channel="browser", split=split,
                                              sample_code=form.cleaned_data["sample_code"])
            except ArchiveRejected as exc:
                results["refused"].append({"name": f.name, "reason": exc.message, "code": exc.code})
                continue
            _merge(results, summary)
        else:
            plain.append((f.name, f.read()))
    if plain:
        summary = services.files_upload(files=plain, uploaded_by=request.user, channel="browser", split=split,
                                        sample_code=form.cleaned_data["sample_code"])
        _merge(results, summary)
    results["counts"] = {k: len(results[k]) for k in ("stored", "duplicates", "refused")}
    if wants_json:
        return JsonResponse(results)
    return render(request, "annotations/upload_summary.html", {"results": results})


def _merge(results, summary):
    data = summary.as_dict()
    for key in ("stored", "duplicates", "refused"):
        results[key].extend(data[key])
    results["batches"].append(data["batch"])


@role_required(LABELLER)
def image_list(request):
    split = request.GET.get("split") or None
    if split and split not in Split.values:
        return HttpResponseBadRequest("Unknown split.")
    page = Paginator(selectors.images_list(split=split), 48).get_page(request.GET.get("page"))
    return render(request, "annotations/image_list.html", {"page": page, "split": split})


@role_required(LABELLER)
def image_detail(request, pk: int):
    image = get_object_or_404(CellImage.objects.select_related("final_label", "uploaded_by"), pk=pk)
    from classifier.models import Prediction

    return render(
        request,
        "annotations/image_detail.html",
        {
            "image": image,
            "history": selectors.image_history(image=image),
            "predictions": Prediction.objects.filter(image=image).select_related("model_version").order_by("-id"),
            "split_form": SplitMoveForm(initial={"split": image.split}),
            "can_move": has_role(request.user, LAB_ADMIN),
        },
    )


@role_required(LABELLER)
def image_file(request, pk: int):
    image = get_object_or_404(CellImage, pk=pk)
    try:
        handle = image.file.open("rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    response = FileResponse(handle, content_type="image/png")
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
    qs = AuditEvent.objects.select_related("actor").order_by("-id")
    action = request.GET.get("action")
    if action:
        qs = qs.filter(action=action)
    page = Paginator(qs, 100).get_page(request.GET.get("page"))
    return render(request, "annotations/audit_log.html", {"page": page, "action": action})


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def taxonomy(request):
    form = CellClassForm(request.POST or None)
    if request.method == "POST":
        code = request.POST.get("code", "")
        instance = CellClass.objects.filter(code=code).first()
        form = CellClassForm(request.POST, instance=instance)
        if form.is_valid():
            try:
                services.cell_class_save(actor=request.user, **{k: form.cleaned_data[k] for k in
                                         ("code", "name", "hotkey", "display_order", "active", "is_leukocyte")})
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, f"Saved {code}.")
                return redirect("annotations:taxonomy")
    return render(request, "annotations/taxonomy.html", {"classes": CellClass.objects.all(), "form": form})
