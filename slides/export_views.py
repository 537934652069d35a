"""The export of signed slides (lab admins): a page and an API view. Thin: validate, call slides.exports."""
from django import forms
from django.core.exceptions import ValidationError
from django.shortcuts import render
from django.views.decorators.http import require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.views import APIView

from annotations.export_views import zip_response
from annotations.exports import ExportProgress
from leukoportal.roles import LAB_ADMIN, IsLabAdmin, role_required

from . import exports


class SlideExportForm(forms.Form):
    slide_ids = forms.CharField(required=False, label="Slide ids",
                                help_text="Comma-separated; blank: every signed slide in the date range.")
    start = forms.DateField(required=False, label="Signed from", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="Signed until", widget=forms.DateInput(attrs={"type": "date"}))
    include_superseded = forms.BooleanField(required=False, label="Also versions a signed correction superseded")
    include_names = forms.BooleanField(required=False, label="Include the names of signers and verifiers "
                                                             "(otherwise pseudonymous ids)")
    include_accessions = forms.BooleanField(required=False, label="Include accession codes")
    progress_token = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    def selection_arguments(self) -> dict:
        return {k: self.cleaned_data[k] for k in ("slide_ids", "start", "end", "include_superseded", "include_names",
                                                   "include_accessions")}


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [" ".join(v) for v in exc.message_dict.values()]
    return exc.messages


@role_required(LAB_ADMIN)
@require_http_methods(["GET", "POST"])
def slides_export(request):
    """GET: the form (with "count" the slides it takes); POST: the zip, streamed."""
    counting = request.method == "GET" and "count" in request.GET
    form = SlideExportForm(request.POST if request.method == "POST" else (request.GET if counting else None))
    count = None
    if form.is_bound and form.is_valid():
        try:
            selection = exports.slide_selection_clean(**form.selection_arguments())
            if request.method == "POST":
                progress = ExportProgress(user_id=request.user.pk, token=form.cleaned_data["progress_token"])
                export = exports.slides_export(selection=selection, actor=request.user, channel="browser",
                                               progress=lambda done, total: progress.update(done, total, unit="slides"))
                return zip_response(export)
            count = exports.slides_for_export(selection=selection).count()
        except ValidationError as exc:
            form.add_error(None, _messages(exc))
    return render(request, "slides/export.html", {"form": form, "count": count},
                  status=400 if form.is_bound and form.errors else 200)


class SlidesExportApi(APIView):
    """Signed slides as a zip: per slide its images, a COCO file of its counted cells, the signed report's
    CSV and FHIR. Lab admins."""

    permission_classes = [IsLabAdmin]

    class InputSerializer(serializers.Serializer):
        slide_ids = serializers.CharField(required=False, default="", allow_blank=True,
                                          help_text="Comma-separated ids; empty: every signed slide in the range.")
        start = serializers.DateField(required=False, allow_null=True, default=None)
        end = serializers.DateField(required=False, allow_null=True, default=None)
        include_superseded = serializers.BooleanField(default=False)
        include_names = serializers.BooleanField(default=False)
        include_accessions = serializers.BooleanField(default=False)

    @extend_schema(parameters=[InputSerializer], responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request):
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        try:
            selection = exports.slide_selection_clean(**data.validated_data)
            export = exports.slides_export(selection=selection, actor=request.user, channel="api")
        except ValidationError as exc:
            raise ApiValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})
        return zip_response(export)
