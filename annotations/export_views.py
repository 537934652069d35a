"""Pages and API views that export the lab's cells and import an export (lab admins). Thin: validate,
call annotations.exports / annotations.imports, respond."""
from functools import partial

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from leukoportal.errors import error_lines, error_text
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


def export_api_response(request, *, query: type[serializers.Serializer], selection_clean,
                        export) -> StreamingHttpResponse:
    """The API's export: the query parameters checked by ``query``, the zip streamed. A selection the
    service refuses is a 400 (the API's exception handler turns its ValidationError into one)."""
    data = query(data=request.query_params)
    data.is_valid(raise_exception=True)
    selection = selection_clean(**data.validated_data)
    return zip_response(export(selection=selection, actor=request.user, channel="api"))


def export_page_view(*, form_class: type[forms.Form], template: str, selection_clean, selected, export,
                     unit: str, field_names: bool):
    """A lab admin's export page. GET: the form (and, with "count" in the query, how many rows the
    selection takes); POST: the zip, streamed, its progress kept under the form's token in ``unit``.
    A selection or an export the services refuse shows as the form's errors (``field_names``: each
    line names its field)."""
    @role_required(LAB_ADMIN)
    @require_http_methods(["GET", "POST"])
    def export_page(request) -> HttpResponse:
        counting = request.method == "GET" and "count" in request.GET
        form = form_class(request.POST if request.method == "POST" else (request.GET if counting else None))
        count = None
        if form.is_bound and form.is_valid():
            try:
                selection = selection_clean(**form.selection_arguments())
                if request.method == "POST":
                    progress = exports.ExportProgress(user_id=request.user.pk,
                                                      token=form.cleaned_data["progress_token"])
                    return zip_response(export(selection=selection, actor=request.user, channel="browser",
                                               progress=partial(progress.update, unit=unit)))
                count = selected(selection=selection).count()
            except ValidationError as exc:
                form.add_error(None, error_lines(exc, field_names=field_names))
        return render(request, template, {"form": form, "count": count},
                      status=400 if form.is_bound and form.errors else 200)

    return export_page


cells_export = export_page_view(form_class=CellExportForm, template="annotations/export_cells.html",
                                selection_clean=exports.cell_selection_clean, selected=exports.cells_for_export,
                                export=exports.cells_export, unit="files", field_names=True)


@role_required(LAB_ADMIN)
@require_GET
def export_progress(request):
    """How far the download the page started has got (the page polls this while it runs)."""
    try:
        state = exports.ExportProgress.read(user_id=request.user.pk, token=request.GET.get("token", ""))
    except ValidationError as exc:
        return HttpResponseBadRequest(error_text(exc))
    return JsonResponse(state or {"done": 0, "total": None, "unit": "files", "finished": False})


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
                labelled_by=imports.labelled_by_resolve(name=data["labelled_by"], importer=request.user,
                                                        channel="browser") if data["readers"] == "one" else None)
        except imports.ImportRefused as exc:
            problems = exc.problems
        except ArchiveRejected as exc:
            problems = [exc.message]
        except ValidationError as exc:
            problems = error_lines(exc, field_names=True)
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
        return export_api_response(request, query=self.InputSerializer, selection_clean=exports.cell_selection_clean,
                                   export=exports.cells_export)


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
                                                  labelled_by=imports.labelled_by_resolve(
                                                      name=v["labelled_by"], importer=request.user, channel="api"))
        except imports.ImportRefused as exc:
            return Response({"detail": "The export was refused; nothing was imported.", "problems": exc.problems},
                            status=status.HTTP_400_BAD_REQUEST)
        except ArchiveRejected as exc:
            return Response({"detail": exc.message, "problems": [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
        except ValidationError as exc:
            return Response({"detail": " ".join(error_lines(exc, field_names=True)),
                             "problems": error_lines(exc, field_names=True)},
                            status=status.HTTP_400_BAD_REQUEST)
        return Response(summary.as_dict(), status=status.HTTP_201_CREATED if summary.changed else status.HTTP_200_OK)
