"""REST API for slides. Thin: validate, call a service, respond."""
import csv
import io

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from leukoportal.api import Conflict, validated_input
from leukoportal.roles import IsLabeller, IsReviewer

from . import selectors, services
from .exports import HL7_CONTENT_TYPE, fhir_report, hl7_report, report_csv_rows
from .models import Slide, SlideCell


class SlideOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)
    signed_by = serializers.SerializerMethodField()
    status_display = serializers.CharField(source="get_status_display", read_only=True,
                                           help_text="The status in words (e.g. 'Awaiting release').")
    submitted_by = serializers.SerializerMethodField(
        help_text="Two-step release: who verified and submitted the slide (null otherwise).")
    superseded_by = serializers.SerializerMethodField(
        help_text="The newer signed version whose report replaces this one's ({id, version}), or null.")
    acquisition_source = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Slide
        fields = ["id", "code", "version", "previous", "kind", "acquisition_source", "wbc_count", "notes", "target_count",
                  "microns_per_pixel", "status", "task_state", "progress", "error", "model_version", "created_by",
                  "created_at", "signed_by", "signed_at", "sign_reason", "correction_reason", "superseded_by",
                  "status_display", "comment", "submitted_by", "submitted_at"]

    def get_signed_by(self, obj) -> str | None:
        return obj.signed_by.get_username() if obj.signed_by_id else None

    def get_submitted_by(self, obj) -> str | None:
        return obj.submitted_by.get_username() if obj.submitted_by_id else None

    @extend_schema_field(inline_serializer("SlideSuccessor", {"id": serializers.IntegerField(),
                                                              "version": serializers.IntegerField()}, allow_null=True))
    def get_superseded_by(self, obj) -> dict | None:
        newer = obj.superseded_by
        return {"id": newer.pk, "version": newer.version} if newer else None


# What a slide cell carries of the model's call: null where the lab's blind rule hides it.
MODEL_CALL_FIELDS = ("predicted_class", "top_class", "confidence", "agreement", "referred", "reasons", "reason",
                     "ood_score", "out_of_distribution")


class CellOutputSerializer(serializers.ModelSerializer):
    final_class = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    referred = serializers.BooleanField(read_only=True, allow_null=True,
                                        help_text="The model referred the cell: top_class is its best guess, not a call.")
    box = serializers.ListField(child=serializers.IntegerField(), allow_null=True, read_only=True)
    field_image = serializers.IntegerField(source="field.image_id", allow_null=True, read_only=True)
    agreement = serializers.CharField(source="agreement_text", read_only=True, allow_null=True)
    reason = serializers.CharField(read_only=True, allow_null=True, help_text="Why the model referred the cell, in words.")
    out_of_distribution = serializers.BooleanField(read_only=True, allow_null=True)
    verified = serializers.BooleanField(read_only=True, help_text="An expert decided on this cell.")
    verified_by = serializers.SerializerMethodField()
    blind = serializers.SerializerMethodField(
        help_text="The lab's blind rule hides this held-out cell's model call from you (as the labelling API does): "
                  f"{', '.join(MODEL_CALL_FIELDS)} are null, and final_class too while it is the model's call or "
                  "another expert's reading.")

    class Meta:
        model = SlideCell
        fields = ["id", "image", "field_image", "box", "detector_kind", "predicted_class", "top_class",
                  "confidence", "agreement", "referred", "reasons", "reason", "ood_score", "out_of_distribution",
                  "model_version", "final_class", "status", "verified", "verified_by", "blind"]
        extra_kwargs = {f: {"allow_null": True} for f in ("predicted_class", "top_class", "reasons")}

    def get_verified_by(self, obj) -> str | None:
        return obj.changed_by.get_username() if obj.changed_by_id else None

    def get_blind(self, obj) -> bool:
        return obj.pk in self._blind.call

    @property
    def _blind(self) -> selectors.BlindCells:
        return self.context.get("blind") or selectors.BlindCells()

    def to_representation(self, obj):
        data = super().to_representation(obj)
        if obj.pk in self._blind.call:
            data.update(dict.fromkeys(MODEL_CALL_FIELDS))
        if obj.pk in self._blind.final_class:
            data["final_class"] = None
        return data


def cells_output(cells, *, user) -> list:
    """Slide cells (with their images loaded) as the API shows them to this user: the blind rule applied."""
    cells = list(cells)
    blind = selectors.slide_cells_blind(cells=cells, user=user)
    return CellOutputSerializer(cells, many=True, context={"blind": blind}).data


class SlideChangeApi(APIView):
    """Base of the views that change a slide's reading: reviewers only; a signed slide answers 409."""

    permission_classes = [IsReviewer]
    conflicts = (services.SlideLocked,)


class SlideListApi(ListAPIView):
    """Slides (paginated, ?status=, ?code=)."""

    permission_classes = [IsLabeller]
    serializer_class = SlideOutputSerializer

    def get_queryset(self):
        st = self.request.query_params.get("status")
        if st and st not in Slide.Status.values:
            raise ValidationError({"status": f"Unknown status; use one of {', '.join(Slide.Status.values)}."})
        return selectors.slides_list(status=st, code=self.request.query_params.get("code"))


class SlideCreateApi(APIView):
    """Create a slide."""

    permission_classes = [IsLabeller]

    @extend_schema_serializer(component_name="SlideListCreateApiInput")
    class InputSerializer(serializers.Serializer):
        code = serializers.CharField(max_length=40)
        kind = serializers.ChoiceField(choices=Slide.Kind.choices, default=Slide.Kind.FIELDS)
        wbc_count = serializers.DecimalField(max_digits=7, decimal_places=2, required=False, allow_null=True)
        target_count = serializers.ChoiceField(choices=Slide.TARGETS, default=100)
        microns_per_pixel = serializers.FloatField(required=False, allow_null=True, default=None,
                                                   help_text="The fields' scale; blank: measured on their red cells.")
        notes = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
        acquisition_source = serializers.CharField(
            required=False, allow_blank=True, max_length=60, default="",
            help_text="The source (microscope/camera) by name or id, an active one; blank: the lab's default source.")

    @extend_schema(request=InputSerializer, responses={201: SlideOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        slide = services.slide_create(created_by=request.user, **v)
        return Response(SlideOutputSerializer(slide).data, status=status.HTTP_201_CREATED)


class SlideDetailApi(APIView):
    """The slide, its processing state and (once processed) its differential."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={200: inline_serializer("SlideDetail", {
        "slide": SlideOutputSerializer(), "differential": serializers.DictField(allow_null=True),
        "differential_withheld": serializers.CharField(
            help_text="Why the differential is null for you ('' otherwise): some of its cells are hidden from you.")})})
    def get(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        processing = slide.task_state in (Slide.TaskState.QUEUED, Slide.TaskState.RUNNING)
        withheld = selectors.slide_totals_withheld(slide=slide, user=request.user)
        return Response({"slide": SlideOutputSerializer(slide).data,
                         "differential": None if processing or withheld else selectors.slide_differential(slide=slide),
                         "differential_withheld": withheld})


class SlideImagesUploadApi(APIView):
    """POST the slide's fields (or cropped cells for a slide of kind 'cells') as `files`."""

    permission_classes = [IsLabeller]
    conflicts = (services.SlideLocked,)
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        files = serializers.ListField(child=serializers.FileField(), allow_empty=False)

    @extend_schema(request=InputSerializer, responses={201: inline_serializer("SlideUpload", {
        "stored": serializers.ListField(), "refused": serializers.ListField()})})
    def post(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        v = validated_input(self.InputSerializer, {"files": request.FILES.getlist("files")})
        result = services.slide_images_add(
            slide=slide, files=[(f.name, f.read()) for f in v["files"]], uploaded_by=request.user)
        return Response(result, status=status.HTTP_201_CREATED if result["stored"] else status.HTTP_400_BAD_REQUEST)


class SlideCellListApi(APIView):
    """The slide's cells: box in field pixels, pre-classification and final class (hidden where the
    lab's blind rule hides them from you: ``blind``)."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={200: CellOutputSerializer(many=True)})
    def get(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        return Response(cells_output(selectors.slide_cells(slide=slide), user=request.user))


class SlideCellReclassifyApi(SlideChangeApi):
    """Set a cell's final class (a class code), 'confirm' (keep its current class; a 400 on a cell
    the model referred, whose best guess is not a call: name the class), or 'not_counted' /
    'counted'. Reviewers."""

    class InputSerializer(serializers.Serializer):
        target = serializers.CharField(max_length=40)

    @extend_schema(request=InputSerializer, responses={200: CellOutputSerializer})
    def post(self, request, pk: int, cell_pk: int):
        cell = get_object_or_404(SlideCell, pk=cell_pk, slide_id=pk)
        v = validated_input(self.InputSerializer, request.data)
        cell = services.slide_cell_reclassify(cell=cell, actor=request.user, target=v["target"])
        return Response(cells_output([cell], user=request.user)[0])


class SlideCellsConfirmApi(SlideChangeApi):
    """Confirm, as they are, the counted cells of one class that no expert has verified yet
    (each becomes the reviewer's label, audited). Reviewers."""

    class InputSerializer(serializers.Serializer):
        code = serializers.CharField(max_length=40)

    @extend_schema(request=InputSerializer,
                   responses={200: inline_serializer("SlideCellsConfirmOutput", {"confirmed": serializers.IntegerField()})})
    def post(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        n = services.slide_cells_confirm(slide=slide, actor=request.user, code=v["code"])
        return Response({"confirmed": n})


class SlideSignApi(SlideChangeApi):
    """Sign the differential. While warnings stand (fewer cells than the target, ...) a
    ``reason`` is required: without one the answer is 400 with the ``warnings``."""

    conflicts = (services.SlideLocked, services.SlideNotReady)  # a missing reason is a 400, below

    sign = staticmethod(services.slide_sign)

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
        comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="",
                                        trim_whitespace=False, help_text="The interpretive comment (optional).")

    @extend_schema(request=InputSerializer, responses={200: SlideOutputSerializer})
    def post(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        try:
            slide = self.sign(slide=slide, actor=request.user, reason=v["reason"], comment=v["comment"])
        except services.SignatureNeedsReason as exc:
            return Response({"reason": [str(exc)], "warnings": exc.warnings}, status=status.HTTP_400_BAD_REQUEST)
        return Response(SlideOutputSerializer(slide).data)


class SlideSubmitApi(SlideSignApi):
    """Two-step release (a lab setting), step one: the technologist who verified the slide submits it
    (the checks of signing; a ``reason`` while warnings stand; an optional draft ``comment``). The
    slide is then ``awaiting_release``: not signed, no report, locked. Reviewers."""

    sign = staticmethod(services.slide_submit)


class SlideReleaseApi(SlideChangeApi):
    """Two-step release, step two: a reviewer other than the submitter releases (signs) the slide;
    ``comment`` replaces the submitted comment when given. The submitter gets 409."""

    conflicts = (services.SlideLocked, services.SlideNotReady)

    class InputSerializer(serializers.Serializer):
        comment = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=2000,
                                        default=None, trim_whitespace=False,
                                        help_text="The interpretive comment; omitted or null keeps the submitted one.")

    @extend_schema(request=InputSerializer, responses={200: SlideOutputSerializer})
    def post(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        slide = services.slide_release(slide=slide, actor=request.user, comment=v["comment"])
        return Response(SlideOutputSerializer(slide).data)


class SlideReleaseReturnApi(SlideChangeApi):
    """Two-step release: a submitted slide goes back to verification, with a ``reason``."""

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=500)

    @extend_schema(request=InputSerializer, responses={200: SlideOutputSerializer})
    def post(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        slide = services.slide_release_return(slide=slide, actor=request.user, reason=v["reason"])
        return Response(SlideOutputSerializer(slide).data)


class SlideCorrectApi(SlideChangeApi):
    """A signed slide is read-only: this makes a new version to verify and sign again."""

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=500)

    @extend_schema(request=InputSerializer, responses={201: SlideOutputSerializer})
    def post(self, request, pk: int):
        slide = get_object_or_404(Slide, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        new = services.slide_correct(slide=slide, actor=request.user, reason=v["reason"])
        return Response(SlideOutputSerializer(new).data, status=status.HTTP_201_CREATED)


class SlideExportApi(APIView):
    """The signed report: json (the frozen differential), csv, fhir (FHIR R4 DiagnosticReport) or
    hl7 (HL7 v2.5.1 ORU^R01)."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/csv"): OpenApiTypes.STR})
    def get(self, request, pk: int, fmt: str = "json"):
        slide = get_object_or_404(Slide.objects.select_related("signed_by"), pk=pk)
        refusal = selectors.slide_report_refusal(slide=slide)
        if refusal:
            raise Conflict(refusal)
        withheld = selectors.slide_totals_withheld(slide=slide, user=request.user)
        if withheld:
            raise PermissionDenied(withheld)
        if fmt == "json":
            return Response(slide.report)
        if fmt == "fhir":
            return Response(fhir_report(slide), content_type="application/fhir+json")
        if fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf).writerows(report_csv_rows(slide))
            return HttpResponse(buf.getvalue(), content_type="text/csv; charset=utf-8")
        if fmt == "hl7":
            return HttpResponse(hl7_report(slide).encode("utf-8"), content_type=HL7_CONTENT_TYPE)
        raise ValidationError({"format": "Use json, csv, fhir or hl7."})
