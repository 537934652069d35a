"""Pages and API views that export the lab's cells and import an export (lab admins). Thin: validate,
call annotations.exports / annotations.imports, respond."""
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from leukoportal.roles import LAB_ADMIN, IsLabAdmin, role_required

from . import exports, imports
from .archives import ArchiveRejected
from .export_forms import CellExportForm, CellImportForm


def zip_response(export: exports.ZipExport) -> StreamingHttpResponse:
    """A streamed download of an export (with its length when known in advance)."""
    response = StreamingHttpResponse(export.chunks, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    if export.size is not None:
        response["Content-Length"] = str(export.size)
    response["Cache-Control"] = "no-store"
    return response


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{k}: {' '.join(v)}" if k != "__all__" else " ".join(v) for k, v in exc.message_dict.items()]
    return exc.messages


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def cells_export(request):
    """GET: the form (with "count" the number of cells it takes); POST: the zip, streamed."""
    counting = request.method == "GET" and "count" in request.GET
    form = CellExportForm(request.POST if request.method == "POST" else (request.GET if counting else None))
    count = None
    if form.is_bound and form.is_valid():
        try:
            selection = exports.cell_selection_clean(**form.selection_arguments())
        except ValidationError as exc:
            form.add_error(None, _messages(exc))
        else:
            if request.method == "POST":
                progress = exports.ExportProgress(user_id=request.user.pk, token=form.cleaned_data["progress_token"])
                try:
                    export = exports.cells_export(selection=selection, actor=request.user, channel="browser",
                                                  progress=progress.update)
                except ValidationError as exc:
                    form.add_error(None, _messages(exc))
                else:
                    return zip_response(export)
            else:
                count = exports.cells_for_export(selection=selection).count()
    return render(request, "annotations/export_cells.html", {"form": form, "count": count},
                  status=400 if form.is_bound and form.errors else 200)


@role_required(LAB_ADMIN)
@require_GET
def export_progress(request):
    """How far the download the page started has got (the page polls this while it runs)."""
    try:
        state = exports.ExportProgress.read(user_id=request.user.pk, token=request.GET.get("token", ""))
    except ValidationError as exc:
        return HttpResponseBadRequest(" ".join(exc.messages))
    return JsonResponse(state or {"done": 0, "total": None, "unit": "files", "finished": False})


def _labelled_by(name: str):
    if not name:
        return None
    user = get_user_model().objects.filter(username=name).first()
    if user is None:
        raise ValidationError({"labelled_by": f"No user named {name!r}."})
    return user


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def cells_import(request):
    form = CellImportForm(request.POST or None, request.FILES or None)
    problems = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            summary = imports.cells_import_export(
                source=data["file"], importer=request.user, channel="browser",
                create_readers=data["readers"] == "create",
                labelled_by=_labelled_by(data["labelled_by"]) if data["readers"] == "one" else None)
        except imports.ImportRefused as exc:
            problems = exc.problems
        except ArchiveRejected as exc:
            problems = [exc.message]
        except ValidationError as exc:
            problems = _messages(exc)
        else:
            return render(request, "annotations/import_summary.html", {"summary": summary})
    return render(request, "annotations/import_cells.html", {"form": form, "problems": problems},
                  status=400 if request.method == "POST" else 200)


# --- API -------------------------------------------------------------------------------------
class CellExportApi(APIView):
    """The selected cells as a zip (an ImageFolder tree, manifest.csv, classes.csv), streamed. Lab admins."""

    permission_classes = [IsLabAdmin]

    class InputSerializer(serializers.Serializer):
        split = serializers.ChoiceField(choices=["all", "train", "heldout"], default="all")
        status = serializers.ChoiceField(choices=list(exports.CellSelection.STATUSES), default="final")
        classes = serializers.CharField(required=False, default="", allow_blank=True,
                                        help_text="Class codes, comma-separated; empty: every class.")
        sources = serializers.CharField(required=False, default="cell,slide_cell",
                                        help_text="cell (uploads) and/or slide_cell (verified on slides).")
        start = serializers.DateField(required=False, allow_null=True, default=None)
        end = serializers.DateField(required=False, allow_null=True, default=None)
        date_field = serializers.ChoiceField(choices=list(exports.CellSelection.DATE_FIELDS), default="uploaded")
        include_names = serializers.BooleanField(default=False)
        include_accessions = serializers.BooleanField(default=False)

    @extend_schema(parameters=[InputSerializer], responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request):
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        try:
            selection = exports.cell_selection_clean(**data.validated_data)
            export = exports.cells_export(selection=selection, actor=request.user, channel="api")
        except ValidationError as exc:
            raise ApiValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})
        return zip_response(export)


class CellImportApi(APIView):
    """Import a cell export (multipart field ``file``). 201 with the summary when something was
    imported, 200 when everything was already here; 400 with ``problems`` (nothing imported)."""

    permission_classes = [IsLabAdmin]
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        create_readers = serializers.BooleanField(default=False)
        labelled_by = serializers.CharField(required=False, allow_blank=True, default="", max_length=150)

    @extend_schema(request=InputSerializer, responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT,
                                                       400: inline_serializer("ImportRefused", {
                                                           "detail": serializers.CharField(),
                                                           "problems": serializers.ListField()})})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            summary = imports.cells_import_export(source=v["file"], importer=request.user, channel="api",
                                                  create_readers=v["create_readers"],
                                                  labelled_by=_labelled_by(v["labelled_by"]))
        except imports.ImportRefused as exc:
            return Response({"detail": "The export was refused; nothing was imported.", "problems": exc.problems},
                            status=status.HTTP_400_BAD_REQUEST)
        except ArchiveRejected as exc:
            return Response({"detail": exc.message, "problems": [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
        except ValidationError as exc:
            return Response({"detail": " ".join(_messages(exc)), "problems": _messages(exc)},
                            status=status.HTTP_400_BAD_REQUEST)
        return Response(summary.as_dict(), status=status.HTTP_201_CREATED if summary.changed else status.HTTP_200_OK)
