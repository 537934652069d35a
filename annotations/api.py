"""REST API for images, taxonomy and labels. Thin: validate, call a service, respond."""
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.ml.reasons import CODES_HELP
from leukoportal.api import validated_input
from leukoportal.roles import IsLabAdmin, IsLabeller, IsReviewer

from . import selectors, services
from .archives import ArchiveRejected
from .imaging import ImageRejected
from sources.selectors import source_resolve

from .models import CellClass, CellImage, LabSettings, Split

SOURCE_HELP = "The source (microscope/camera) by name or id, an active one; blank: the lab's default source."


class ImageOutputSerializer(serializers.ModelSerializer):
    final_label = serializers.SerializerMethodField(
        help_text="The decided class; null while the cell is in a proficiency test open for the caller.")
    acquisition_source = serializers.SlugRelatedField(slug_field="name", read_only=True)
    needs_review = serializers.SerializerMethodField(
        help_text="Whether the experts disagree; null where the lab's blind mode hides other readings from the caller.")
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = CellImage
        fields = ["id", "sha256", "width", "height", "original_format", "source", "acquisition_source", "split",
                  "sample_code",
                  "batch", "uploaded_at", "final_label", "needs_review", "file_url"]

    def get_final_label(self, obj) -> str | None:
        request = self.context.get("request")
        if obj.final_label_id is None or request is None or LabSettings.hides_final_label(image=obj, user=request.user):
            return None
        return obj.final_label.code

    def get_needs_review(self, obj) -> bool | None:
        request = self.context.get("request")
        if request is None:
            return None  # reader unknown: say nothing about other experts' readings
        lab = self.context.setdefault("lab", LabSettings.get())  # one lookup for a whole page
        return None if lab.hides_other_readings(image=obj, user=request.user) else obj.needs_review

    def get_file_url(self, obj) -> str:
        return reverse("api_image_file", args=[obj.pk])


class ImageListApi(ListAPIView):
    """List images (paginated; ?split=, ?labelled=true|false, ?source=)."""

    permission_classes = [IsLabeller]
    serializer_class = ImageOutputSerializer

    def get_queryset(self):
        split = self.request.query_params.get("split")
        if split and split not in Split.values:
            raise ValidationError({"split": f"Unknown split; use one of {', '.join(Split.values)}."})
        labelled = self.request.query_params.get("labelled")
        labelled_flag = {"true": True, "false": False}.get(labelled) if labelled else None
        return selectors.images_list(split=split, labelled=labelled_flag, source=self.request.query_params.get("source")
                                     ).select_related("acquisition_source")


class ImageCreateApi(APIView):
    """Upload one image (multipart field `file`): 201 when stored; 200 with ``duplicate`` true when it was
    stored before, and a ``message`` that says which split it stays in (its own ``split``)."""

    permission_classes = [IsLabeller]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="ImageListCreateInput")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        split = serializers.ChoiceField(choices=Split.choices, default=Split.TRAIN)
        sample_code = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")
        acquisition_source = serializers.CharField(required=False, allow_blank=True, max_length=60, default="",
                                                   help_text=SOURCE_HELP)

    @extend_schema(request=InputSerializer, responses={201: ImageOutputSerializer, 200: ImageOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        split = v["split"]
        services.upload_split_check(user=request.user, split=split)
        acquisition_source = source_resolve(value=v["acquisition_source"])
        try:
            outcome = services.image_upload(
                data=v["file"].read(), uploaded_by=request.user, split=split,
                sample_code=v.get("sample_code", ""), acquisition_source=acquisition_source,
            )
        except ImageRejected as exc:
            return Response({"file": [exc.message], "code": exc.code}, status=status.HTTP_400_BAD_REQUEST)
        body = ImageOutputSerializer(outcome.image, context={"request": request}).data
        body["duplicate"] = not outcome.created
        if not outcome.created:
            body["message"] = services.duplicate_message(image=outcome.image, split=split)
        return Response(body, status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK)


class ImageDetailApi(RetrieveAPIView):
    permission_classes = [IsLabeller]
    serializer_class = ImageOutputSerializer
    queryset = CellImage.objects.select_related("final_label", "acquisition_source")


class ImageFileApi(APIView):
    permission_classes = [IsLabeller]

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request, pk: int):
        image = get_object_or_404(CellImage, pk=pk)
        response = FileResponse(selectors.image_file_open(image=image), content_type="image/png")
        response["Cache-Control"] = "private, max-age=31536000, immutable"
        return response


class BatchUploadApi(APIView):
    """POST a zip archive (field `file`) or many images (field `files`); answers the batch summary."""

    permission_classes = [IsLabeller]
    parser_classes = [MultiPartParser]

    @extend_schema_serializer(component_name="BatchUploadInput")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(required=False)
        files = serializers.ListField(child=serializers.FileField(), required=False)
        split = serializers.ChoiceField(choices=Split.choices, default=Split.TRAIN)
        sample_code = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")
        acquisition_source = serializers.CharField(required=False, allow_blank=True, max_length=60, default="",
                                                   help_text=SOURCE_HELP)

    @extend_schema(request=InputSerializer, responses={201: inline_serializer("BatchSummary", {
        "batch": serializers.IntegerField(), "stored": serializers.ListField(), "duplicates": serializers.ListField(),
        "refused": serializers.ListField(), "counts": serializers.DictField()})})
    def post(self, request):
        payload = {k: v for k, v in request.data.items() if k != "files"}
        payload["files"] = request.FILES.getlist("files")
        v = validated_input(self.InputSerializer, payload)
        services.upload_split_check(user=request.user, split=v["split"])
        try:
            if v.get("file") is not None:
                summary = services.zip_upload(fileobj=v["file"], uploaded_by=request.user, channel="api",
                                              split=v["split"], sample_code=v.get("sample_code", ""),
                                              acquisition_source=v["acquisition_source"])
            elif v.get("files"):
                summary = services.files_upload(files=[(f.name, f.read()) for f in v["files"]], uploaded_by=request.user,
                                                 channel="api", split=v["split"], sample_code=v.get("sample_code", ""),
                                                 acquisition_source=v["acquisition_source"])
            else:
                raise ValidationError({"file": ["Send a zip archive as `file` or images as `files`."]})
        except ArchiveRejected as exc:
            return Response({"file": [exc.message], "code": exc.code}, status=status.HTTP_400_BAD_REQUEST)
        return Response(summary.as_dict(), status=status.HTTP_201_CREATED)


class CellClassSerializer(serializers.ModelSerializer):
    class Meta:
        model = CellClass
        fields = ["code", "name", "hotkey", "display_order", "active", "is_abstain", "is_leukocyte"]
        read_only_fields = ["is_abstain"]


class CellClassListApi(ListAPIView):
    permission_classes = [IsLabeller]
    serializer_class = CellClassSerializer
    pagination_class = None
    queryset = CellClass.objects.all()


class CellClassSaveApi(APIView):
    """Create a class, or rename / reorder / deactivate one (lab admins). Past labels are kept."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="CellClassSaveInput")
    class InputSerializer(serializers.Serializer):
        code = serializers.SlugField(max_length=40)
        name = serializers.CharField(max_length=100)
        hotkey = serializers.CharField(max_length=1, required=False, allow_blank=True, default="")
        display_order = serializers.IntegerField(min_value=0, max_value=10000, default=100)
        active = serializers.BooleanField(default=True)
        is_leukocyte = serializers.BooleanField(default=True)

    @extend_schema(request=InputSerializer, responses={200: CellClassSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        obj = services.cell_class_save(actor=request.user, **v)
        return Response(CellClassSerializer(obj).data)


# --- Labelling, review ---------------------------------------------------------------------

class SuggestionSerializer(serializers.Serializer):
    cell_class = serializers.CharField(source="code")
    name = serializers.CharField()
    confidence = serializers.FloatField()
    abstained = serializers.BooleanField()
    reason = serializers.CharField(help_text="Why the model referred the cell to an expert, in words ('' when it did not).")
    reasons = serializers.ListField(child=serializers.CharField(),
                                    help_text=CODES_HELP)
    out_of_distribution = serializers.BooleanField(help_text="The image is unlike the model's training images.")
    ood_score = serializers.FloatField(allow_null=True)
    model_version = serializers.IntegerField(source="model_version_id")


class MyLabelSerializer(serializers.Serializer):
    cell_class = serializers.CharField(source="cell_class.code")
    unsure = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    suggested_class = serializers.CharField(source="suggested_class.code", allow_null=True, default=None)
    suggestion_referred = serializers.BooleanField(
        help_text="The model had referred the cell: suggested_class was its best guess, not its call.")
    confirmed_suggestion = serializers.BooleanField(allow_null=True)


class LabellingCellSerializer(serializers.Serializer):
    """A cell as a labeller sees it: never another expert's label; no suggestion when blind."""

    id = serializers.IntegerField()
    split = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    file_url = serializers.CharField()
    thumb_url = serializers.CharField()
    suggestion = SuggestionSerializer(allow_null=True)
    my_label = MyLabelSerializer(allow_null=True)


def _cells_payload(images, user, lab) -> list[dict]:
    images = list(images)
    suggestions = selectors.suggestions_for(images=images, user=user, lab=lab)
    mine = selectors.labels_current_of(user=user, image_ids=[im.pk for im in images
                                                             if not lab.hides_final_label(image=im, user=user)])
    return [
        {
            "id": im.pk, "split": im.split, "width": im.width, "height": im.height,
            "file_url": reverse("api_image_file", args=[im.pk]),
            "thumb_url": reverse("annotations:image_thumb", args=[im.pk]),
            "suggestion": suggestions.get(im.pk), "my_label": mine.get(im.pk),
        }
        for im in images
    ]


class QueueCountsApi(APIView):
    """How many cells each labelling queue holds for the caller."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={200: inline_serializer("QueueCounts", {
        "queues": serializers.ListField(child=inline_serializer("QueueCount", {
            "name": serializers.CharField(), "title": serializers.CharField(), "count": serializers.IntegerField()}))})})
    def get(self, request):
        counts = selectors.labelling_queue_counts(user=request.user)
        return Response({"queues": [{"name": k, "title": v, "count": counts[k]} for k, v in selectors.QUEUES.items()]})


class QueuePagination(PageNumberPagination):
    page_size = 48
    page_size_query_param = "page_size"
    max_page_size = 200


class QueueListApi(ListAPIView):
    """The cells of one queue (unlabelled, prelabelled, unsure, heldout) for the caller, in reading order."""

    permission_classes = [IsLabeller]
    serializer_class = LabellingCellSerializer
    pagination_class = QueuePagination

    def get_queryset(self):
        queue = self.kwargs["queue"]
        if queue not in selectors.QUEUES:
            raise Http404(f"Unknown queue; use one of {', '.join(selectors.QUEUES)}.")
        self.lab = LabSettings.get()
        return selectors.labelling_queue(user=self.request.user, queue=queue, lab=self.lab)

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        data = LabellingCellSerializer(_cells_payload(page, request.user, self.lab), many=True).data
        return self.get_paginated_response(data)


class LabellingCellApi(APIView):
    """One cell for labelling: its suggestion (unless blind) and the caller's own current label."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={200: LabellingCellSerializer})
    def get(self, request, pk: int):
        image = get_object_or_404(CellImage, pk=pk)
        return Response(LabellingCellSerializer(_cells_payload([image], request.user, LabSettings.get())[0]).data)


class LabelOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    cell_class = serializers.CharField(source="cell_class.code")
    unsure = serializers.BooleanField()
    suggested_class = serializers.CharField(source="suggested_class.code", allow_null=True, default=None)
    suggestion_model_version = serializers.IntegerField(source="suggestion_model_version_id", allow_null=True)
    suggestion_referred = serializers.BooleanField(
        help_text="The model had referred the cell: suggested_class was its best guess, not its call.")
    confirmed_suggestion = serializers.BooleanField(
        allow_null=True, help_text="The class is the suggested class (a call, or a referred cell's best guess).")
    confirmed_model_call = serializers.BooleanField(help_text="The expert confirmed a call the model accepted.")
    created_at = serializers.DateTimeField()


def _active_class(code: str) -> CellClass:
    cell_class = CellClass.objects.filter(code=code).first()
    if cell_class is None:
        raise ValidationError({"cell_class": [f"Unknown class {code!r}."]})
    return cell_class


class CellDecisionInput(serializers.Serializer):
    # An expert's decision on one cell: the image's id and a class code. (A comment, not a docstring:
    # drf-spectacular would print a docstring in every input schema built on this one.)
    image = serializers.IntegerField()
    cell_class = serializers.CharField(max_length=40)


def _decided_cell(v: dict) -> tuple[CellImage, CellClass]:
    """The cell and the class a ``CellDecisionInput`` names: 404 for an unknown cell, 400 for an unknown class."""
    return get_object_or_404(CellImage, pk=v["image"]), _active_class(v["cell_class"])


class LabelCreateApi(APIView):
    """Record the caller's label of one cell (a previous label of theirs is superseded, never deleted).

    Either a class (``cell_class``) or ``confirm_model_call: true``, which takes the class the model
    accepted; on a cell the model referred (its suggestion only a best guess) that is a 400: the
    class must be named. The suggestion the portal offered is recorded with the label; 409 when a
    reviewer already decided the cell.
    """

    permission_classes = [IsLabeller]
    conflicts = (services.LabelConflict,)

    @extend_schema_serializer(component_name="LabelCreateInput")
    class InputSerializer(CellDecisionInput):
        cell_class = serializers.CharField(max_length=40, required=False)
        confirm_model_call = serializers.BooleanField(
            default=False, help_text="Confirm the model's accepted call instead of naming a class (refused on a "
                                     "cell the model referred).")
        unsure = serializers.BooleanField(default=False)
        model_version = serializers.IntegerField(required=False, allow_null=True,
                                                 help_text="The version whose suggestion was shown, if any.")

        def validate(self, attrs):
            if attrs["confirm_model_call"] == bool(attrs.get("cell_class")):
                raise serializers.ValidationError(
                    {"cell_class": ["Send either cell_class or confirm_model_call: true (not both)."]})
            return attrs

    @extend_schema(request=InputSerializer, responses={201: LabelOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        if v["confirm_model_call"]:
            image = get_object_or_404(CellImage, pk=v["image"])
            label = services.label_confirm_model_call(image=image, labeller=request.user, unsure=v["unsure"],
                                                      model_version_id=v.get("model_version"))
        else:
            image, cell_class = _decided_cell(v)
            label = services.label_submit_as_offered(image=image, labeller=request.user, cell_class=cell_class,
                                                     unsure=v["unsure"], model_version_id=v.get("model_version"))
        return Response(LabelOutputSerializer(label).data, status=status.HTTP_201_CREATED)


class LabelBulkCreateApi(APIView):
    """One class for many cells at once (multi-select); each refused cell is listed with the reason."""

    permission_classes = [IsLabeller]

    @extend_schema_serializer(component_name="LabelBulkCreateInput")
    class InputSerializer(serializers.Serializer):
        images = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=200)
        cell_class = serializers.CharField(max_length=40)
        unsure = serializers.BooleanField(default=False)

    @extend_schema(request=InputSerializer, responses={200: inline_serializer("BulkLabelResult", {
        "labels": LabelOutputSerializer(many=True), "refused": serializers.ListField(child=serializers.DictField())})})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        outcome = services.labels_submit_many(image_ids=v["images"], labeller=request.user,
                                              cell_class=_active_class(v["cell_class"]), unsure=v["unsure"])
        return Response({"labels": LabelOutputSerializer(outcome.labelled, many=True).data, "refused": outcome.refused})


class LabelWithdrawApi(APIView):
    """Undo: the caller's current label of the cell is superseded without a replacement (kept in history)."""

    permission_classes = [IsLabeller]
    conflicts = (services.LabelConflict,)

    @extend_schema_serializer(component_name="LabelWithdrawInput")
    class InputSerializer(serializers.Serializer):
        image = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={200: inline_serializer("LabelWithdrawn", {
        "withdrawn": serializers.BooleanField()})})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        image = get_object_or_404(CellImage, pk=v["image"])
        withdrawn = services.label_withdraw(image=image, labeller=request.user)
        return Response({"withdrawn": withdrawn is not None})


class SideBySideLabelSerializer(serializers.Serializer):
    labeller = serializers.CharField(source="labeller.username")
    cell_class = serializers.CharField(source="cell_class.code")
    unsure = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    suggested_class = serializers.SerializerMethodField(
        help_text="The model's suggestion the expert was shown; null where blind mode hides the model's call.")

    suggestion_referred = serializers.SerializerMethodField(
        help_text="The model had referred the cell (suggested_class was its best guess, not its call); "
                  "null where blind mode hides the model's call.")

    def _shown(self, obj) -> bool:
        return obj.image_id not in self.context.get("model_hidden", ()) and obj.suggested_class_id is not None

    def get_suggested_class(self, obj) -> str | None:
        return obj.suggested_class.code if self._shown(obj) else None

    def get_suggestion_referred(self, obj) -> bool | None:
        return obj.suggestion_referred if self._shown(obj) else None


class AdjudicationItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    split = serializers.CharField()
    file_url = serializers.CharField()
    labels = SideBySideLabelSerializer(many=True)


class AdjudicationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    cell_class = serializers.CharField(source="cell_class.code")
    reviewer = serializers.CharField(source="reviewer.username")
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class AdjudicationListApi(APIView):
    """The adjudication queue (paginated) with every expert's label side by side."""

    permission_classes = [IsReviewer]

    @extend_schema(parameters=[OpenApiParameter("page", int)], responses={200: AdjudicationItemSerializer(many=True)})
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.adjudication_queue(user=request.user), request, view=self)
        labels = selectors.labels_side_by_side(image_ids=[im.pk for im in page])
        lab = LabSettings.get()
        hidden = {im.pk for im in page if lab.hides_model_call(image=im, user=request.user)}
        items = [{"id": im.pk, "split": im.split, "file_url": reverse("api_image_file", args=[im.pk]),
                  "labels": labels[im.pk]} for im in page]
        data = AdjudicationItemSerializer(items, many=True, context={"model_hidden": hidden}).data
        return paginator.get_paginated_response(data)


class AdjudicationCreateApi(APIView):
    """A reviewer's final decision on a cell (first decision wins; 409 for the second)."""

    permission_classes = [IsReviewer]
    conflicts = (services.LabelConflict,)

    @extend_schema_serializer(component_name="AdjudicationInput")
    class InputSerializer(CellDecisionInput):
        note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: AdjudicationOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        image, cell_class = _decided_cell(v)
        adjudication = services.adjudication_submit(image=image, reviewer=request.user, cell_class=cell_class,
                                                    note=v["note"])
        return Response(AdjudicationOutputSerializer(adjudication).data, status=status.HTTP_201_CREATED)


@extend_schema_serializer(component_name="LabSettingsInput")
class LabSettingsSerializer(serializers.Serializer):
    labels_required_train = serializers.IntegerField(min_value=1, max_value=5)
    labels_required_heldout = serializers.IntegerField(min_value=1, max_value=5)
    blind_heldout = serializers.BooleanField()
    slides_train = serializers.BooleanField(
        required=False, help_text="Cells verified on slides train the next model (unchanged when left out).")
    two_step_release = serializers.BooleanField(
        required=False, help_text="Slides are submitted by the verifier and released by a second reviewer "
                                  "(unchanged when left out).")


class LabSettingsApi(APIView):
    """The lab's labelling rules (lab admins): independent labels needed per split, blind held-out mode,
    whether cells verified on slides train the next model."""

    permission_classes = [IsLabAdmin]
    serializer_class = LabSettingsSerializer  # the part of the lab's settings this view shows

    def get(self, request):
        return Response(self.serializer_class(LabSettings.get()).data)


class LabSettingsUpdateApi(APIView):
    """Change the lab's labelling rules (lab admins); audited. Answers the rules as they now stand."""

    permission_classes = [IsLabAdmin]
    serializer_class = LabSettingsSerializer  # the part of the lab's settings this view changes

    def update(self, *, actor, **data) -> LabSettings:
        return services.lab_settings_update(actor=actor, **data)

    def post(self, request):
        v = validated_input(self.serializer_class, request.data)
        return Response(self.serializer_class(self.update(actor=request.user, **v)).data)
