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
from leukoportal.roles import IsLabAdmin, IsLabeller

from ..api import SlideChangeApi
from ..models import Slide, SlideField
from ..selectors import slide_differential
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
        estimate = slide_differential(slide=slide).get("platelets")  # its flag by the differential's rules
        return Response({"enabled": lab.platelet_estimate, "estimate": estimate,
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
    platelet_estimate = serializers.BooleanField(
        help_text="Report the estimate; refused (400) while the factor is not calibrated.")
    platelet_factor = serializers.FloatField(read_only=True, allow_null=True,
                                             help_text="Set only by a calibration (null until then).")
    platelet_calibration = serializers.SerializerMethodField()

    def get_platelet_calibration(self, lab) -> dict | None:
        """The factor's calibration: factor, 95% interval, slides (n), standard error, when, by whom."""
        return lab.platelet_calibration()

    def validate(self, attrs):
        if "platelet_factor" in self.initial_data:
            raise serializers.ValidationError({"platelet_factor": "The factor is set only by a calibration against "
                                                                  "analyser counts: POST "
                                                                  "/api/slides/platelet-settings/calibration/."})
        return attrs


class PlateletSettingsApi(LabSettingsApi):
    """The lab's platelet estimate (lab admins): on/off, the factor and its calibration."""

    serializer_class = PlateletSettingsSerializer


class PlateletSettingsUpdateApi(LabSettingsUpdateApi):
    """Turn the lab's platelet estimate on or off (lab admins); audited. Turning it on is refused
    (400) while the factor is not calibrated."""

    serializer_class = PlateletSettingsSerializer

    def update(self, *, actor, platelet_estimate: bool) -> LabSettings:
        return services.platelet_settings_update(actor=actor, enabled=platelet_estimate)


class PlateletCalibrationApi(APIView):
    """Calibrate the lab's platelet factor (lab admins): at least 10 slides, each the analyser's
    platelet count (10^9/L) with the slide's mean platelets per field (``per_field``) or the
    accession code of a signed slide of fields (``accession``; its mean is read). Answers the
    factor with its 95% interval; stores it (with the date and the user; audited) unless
    ``save`` is false."""

    permission_classes = [IsLabAdmin]

    class PairSerializer(serializers.Serializer):
        analyser_count = serializers.FloatField()
        per_field = serializers.FloatField(required=False)
        accession = serializers.CharField(required=False, max_length=64)

        def validate(self, attrs):
            if ("per_field" in attrs) == ("accession" in attrs):
                raise serializers.ValidationError("Give either per_field or accession.")
            return attrs

    class InputSerializer(serializers.Serializer):
        pairs = serializers.ListField(min_length=1, max_length=1000)
        save = serializers.BooleanField(default=True)

        def validate_pairs(self, value):
            out = []
            for i, item in enumerate(value, start=1):
                pair = PlateletCalibrationApi.PairSerializer(data=item)
                if not pair.is_valid():
                    raise serializers.ValidationError({f"pair {i}": pair.errors})
                v = pair.validated_data
                out.append((v["analyser_count"], v.get("accession", v.get("per_field")), f"pair {i}"))
            return out

    @extend_schema(request=InputSerializer, responses={200: inline_serializer("PlateletCalibration", {
        "factor": serializers.FloatField(), "interval": serializers.ListField(child=serializers.FloatField()),
        "n": serializers.IntegerField(), "se": serializers.FloatField(), "residual_sd": serializers.FloatField(),
        "saved": serializers.BooleanField(), "calibration": serializers.DictField(allow_null=True)})})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        result = selectors.platelet_calibration_compute(pairs=selectors.platelet_calibration_pairs(pairs=v["pairs"]))
        calibration = None
        if v["save"]:
            calibration = services.platelet_calibration_save(actor=request.user, pairs=v["pairs"]).platelet_calibration()
        return Response({**result.as_dict(), "saved": v["save"], "calibration": calibration})
