"""The export of signed slides (lab admins): a page and an API view. Thin: validate, call slides.exports."""
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from annotations.export_views import export_api_response, export_page_view
from leukoportal.roles import IsLabAdmin

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


slides_export = export_page_view(form_class=SlideExportForm, template="slides/export.html",
                                 selection_clean=exports.slide_selection_clean, selected=exports.slides_for_export,
                                 export=exports.slides_export, unit="slides", field_names=False)


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
        return export_api_response(request, query=self.InputSerializer, selection_clean=exports.slide_selection_clean,
                                   export=exports.slides_export)
