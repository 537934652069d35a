"""REST API for the platelet estimate (the slide's figures are also in its differential, under
``platelets``, when the lab turned the estimate on). Thin: validate, call a service."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.api import LabSettingsApi, LabSettingsUpdateApi
from annotations.models import LabSettings
from leukoportal.api import validated_input
from leukoportal.roles import IsLabeller

from ..api import SlideChangeApi
from ..models import Slide, SlideField
from . import selectors, services


class FieldOutputSerializer(serializers.ModelSerializer):
    platelets_reported = serializers.IntegerField(read_only=True, allow_null=True)
    platelet_corrected_by = serializers.SerializerMethodField()

    class Meta:
        model = SlideField
        fields = ["id", "image", "position", "platelet_count", "platelet_count_corrected", "platelets_reported",
                  "platelet_corrected_by", "platelet_corrected_at", "platelet_clumps", "platelet_boxes",
                  "red_cell_count", "red_cell_boxes"]

    def get_platelet_corrected_by(self, obj) -> str | None:
        return obj.platelet_corrected_by.get_username() if obj.platelet_corrected_by_id else None


class SlidePlateletsApi(APIView):
    """The slide's fields with their platelets and red cells, and the estimate (null unless the lab
    turned it on)."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={200: inline_serializer("SlidePlatelets", {
        "enabled": serializers.BooleanField(), "estimate": serializers.DictField(allow_null=True),
        "fields": FieldOutputSerializer(many=True)})})
    def get(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        lab = LabSettings.get()
        return Response({"enabled": lab.platelet_estimate, "estimate": selectors.slide_platelets(slide=slide, lab=lab),
                         "fields": FieldOutputSerializer(slide.fields.all(), many=True).data})


class FieldPlateletsCorrectApi(SlideChangeApi):
    """A reviewer's platelet count of one field (null withdraws the correction); audited."""

    class InputSerializer(serializers.Serializer):
        count = serializers.IntegerField(min_value=0, allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: FieldOutputSerializer})
    def post(self, request, pk: int, field_pk: int):
        field = get_object_or_404(SlideField, pk=field_pk, slide_id=pk)
        v = validated_input(self.InputSerializer, request.data)
        field = services.field_platelet_correct(field=field, actor=request.user, count=v["count"])
        return Response(FieldOutputSerializer(field).data)


@extend_schema_serializer(component_name="PlateletSettingsApiInput")
class PlateletSettingsSerializer(serializers.Serializer):
    platelet_estimate = serializers.BooleanField()
    platelet_factor = serializers.FloatField(min_value=0.0, max_value=services.MAX_FACTOR)


class PlateletSettingsApi(LabSettingsApi):
    """The lab's platelet estimate (lab admins): on/off and the factor (10^9/L per platelet per field)."""

    serializer_class = PlateletSettingsSerializer


class PlateletSettingsUpdateApi(LabSettingsUpdateApi):
    """Turn the lab's platelet estimate on or off and set its factor (lab admins); audited."""

    serializer_class = PlateletSettingsSerializer

    def update(self, *, actor, platelet_estimate: bool, platelet_factor: float) -> LabSettings:
        return services.platelet_settings_update(actor=actor, enabled=platelet_estimate, factor=platelet_factor)
